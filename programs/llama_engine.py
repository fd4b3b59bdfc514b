"""The embedded llama.cpp engine for DSPy 3.4 (``dspy.LM(engine=LlamaCppEngine(...))``).

DSPy hands a custom engine one canonical ``dspy.lm15.Request`` and expects one ``Response``; it
keeps fan-out (``n``), caching, retries and history itself. This engine adds what a small
in-process model needs:

- structured output: a JSON schema in ``response_format`` becomes a llama.cpp grammar, so an
  answer cannot be unparseable (numbers bounded to [0, 1] or [-1, 1] are range-valid by shape);
- label log-probabilities at a slot (:meth:`LlamaCppEngine.slot_logprobs`), reusing the KV cache of
  the shared prompt prefix;
- one model load per process and a lock around every use, so threads can share it.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from programs.embedded_models import embedded_model
from programs.json_grammar import schema_from_response_format, schema_to_gbnf
from programs.slot_decoder import (
    DecodeOptions,
    Reading,
    Slot,
    carry_expected,
    compile_schema,
    decode,
    greedy,
    option_logprobs,
    readings_to_logprobs,
    rewrite_expected,
    sampler,
)
from programs.types import ContextOverflow

DEFAULT_MAX_TOKENS = 256


@dataclass
class _Loaded:
    llm: Any
    lock: threading.RLock
    formatter: Any  # a chat formatter, or None for base models (plain text format)
    stop: list[str]


_LOADED: dict[str, _Loaded] = {}
_LOAD_LOCK = threading.Lock()


def _threads() -> int:
    """llama.cpp threads: ``$SELFX_THREADS`` (set when several worker processes share the cores), else every core."""
    value = os.environ.get("SELFX_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else os.cpu_count() or 2


def plain_weight_buffers() -> None:
    """Load every later llama.cpp model with its weights in plain CPU buffers (no "extra buffer types").

    llama.cpp repacks some quantised weights (Q4_K, Q8_0) into layouts for GEMM kernels: on AMX CPUs
    (Sapphire Rapids and newer) that AMX buffer segfaults in the first ``llama_decode``
    (ggml-org/llama.cpp#20824, seen here on both embedded models); elsewhere the repacked GEMM and GEMV
    kernels sum in different orders, so Gemma-3's label log-odds moved by up to 0.17 nats with how a
    prompt was split into batches (plain buffers: 19 of 24 splits exact against 6 of 24), at no cost in
    speed (measured by ``selfx bench``). ``Llama`` does not expose the field, so the defaults it starts
    from are wrapped; process-wide, so a llama.cpp server started from Python gets it too. Idempotent.
    """
    import llama_cpp.llama_cpp as bindings

    defaults = bindings.llama_model_default_params
    if getattr(defaults, "plain_weight_buffers", False):
        return

    def plain() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    plain.plain_weight_buffers = True  # type: ignore[attr-defined]
    bindings.llama_model_default_params = plain


@atexit.register
def _close_models() -> None:
    # Free the models while llama.cpp's bindings still exist; at interpreter teardown they may not.
    for loaded in _LOADED.values():
        loaded.llm.close()
    _LOADED.clear()


def _load(path: str, chat: bool, n_ctx: int) -> _Loaded:
    """Load a GGUF once per process (keyed by path and context size)."""
    key = f"{path}|{n_ctx}"
    with _LOAD_LOCK:
        if key not in _LOADED:
            try:
                from llama_cpp import Llama
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter
            except ImportError as exc:  # pragma: no cover - install hint
                raise ImportError("the embedded engine needs llama-cpp-python: pip install llama-cpp-python") from exc
            plain_weight_buffers()
            # prompt evaluation (the probe's work) has its own thread count, all cores unless given
            llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=_threads(), n_threads_batch=_threads(),
                        n_batch=512, logits_all=False, verbose=False, seed=0)
            formatter, stop = None, []
            template = llm.metadata.get("tokenizer.chat_template")
            if chat and template:
                eos = llm._model.token_get_text(llm.token_eos())
                bos = llm._model.token_get_text(llm.token_bos())
                formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
                stop = [eos]
            _LOADED[key] = _Loaded(llm, threading.RLock(), formatter, stop)
        return _LOADED[key]


def request_messages(request: Any) -> list[dict[str, str]]:
    """A Request's system text and messages as plain role/content dicts."""
    messages: list[dict[str, str]] = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        messages.append({"role": message.role, "content": message.text or ""})
    return messages


def render_plain(messages: Sequence[dict[str, str]]) -> str:
    """Plain few-shot text for base models without a chat template.

    >>> render_plain([{"role": "system", "content": "Classify."}, {"role": "user", "content": "a"},
    ...               {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
    'Classify.\\n\\na\\nb\\n\\nc\\n'
    """
    parts: list[str] = []
    for message in messages:
        if message["role"] == "system":
            parts.append(message["content"] + "\n\n")
        elif message["role"] == "user":
            parts.append(message["content"] + "\n")
        else:
            parts.append(message["content"] + "\n\n")
    return "".join(parts)


@dataclass
class EngineStats:
    """What the engine has evaluated: tokens sent to ``llama_decode`` and evaluation passes."""

    evaluated_tokens: int = 0
    passes: int = 0


class LlamaCppEngine:
    """A DSPy engine running a GGUF model in-process with llama.cpp.

    Args:
        model: an embedded model name (see ``programs.embedded_models``) or a path to a .gguf file.
        n_ctx: context window in tokens.
        seed: seeds sampling at temperature > 0 (each call draws its own seed from this stream).
    """

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "response_format"})

    def __init__(self, model: str, *, n_ctx: int = 4096, seed: int = 0) -> None:
        if model.endswith(".gguf") or os.sep in model:
            path = Path(model).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"GGUF model file not found: {path}; pass an existing local:/path/model.gguf")
            self.model_name, self.model_path, chat = path.name, str(path), True
        else:
            spec = embedded_model(model)
            self.model_name, self.model_path, chat = spec.name, str(spec.locate()), spec.chat_template
        self.model = model
        self.n_ctx = n_ctx
        self.seed = seed
        self._chat = chat
        self._rng = random.Random(seed)
        self._grammars: dict[str, Any] = {}
        self.stats = EngineStats()

    # -- DSPy engine interface -------------------------------------------------------------------
    def complete(self, request: Any) -> Any:
        from dspy.clients.engines.base import validate_request
        from dspy.lm15 import Message, Response, Usage

        validate_request(request)
        config = request.config
        loaded = self._loaded()
        prompt = self.prompt_tokens(request_messages(request))
        if len(prompt) >= self.n_ctx:
            raise ContextOverflow(f"prompt of {len(prompt)} tokens does not fit the {self.n_ctx}-token context; "
                                  "shorten the review or the demos")
        temperature = 0.0 if config.temperature is None else float(config.temperature)
        schema = schema_from_response_format(config.response_format)
        skeleton = compile_schema(schema) if schema else None
        with loaded.lock:
            seed = config.seed if config.seed is not None else self._rng.randrange(2**31)
            if skeleton is not None:
                options = DecodeOptions.from_metadata((config.extensions or {}).get("metadata"))
                text, readings, n_out = self._decode_skeleton(prompt, skeleton, temperature, seed, options)
                return Response(id=None, model=request.model, message=Message.assistant(text), finish_reason="stop",
                                usage=Usage(input_tokens=len(prompt), output_tokens=n_out),
                                logprobs=readings_to_logprobs(skeleton, readings))
            out = loaded.llm.create_completion(
                prompt=prompt,
                max_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
                temperature=temperature,
                top_p=1.0 if config.top_p is None else float(config.top_p),
                stop=[*config.stop, *loaded.stop],
                grammar=self._grammar(schema),
                seed=seed,
            )
        choice = out["choices"][0]
        usage = out["usage"]
        return Response(
            id=out.get("id"),
            model=request.model,
            message=Message.assistant(choice["text"]),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=Usage(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]),
        )

    def _decode_skeleton(self, prompt: list[int], skeleton: list, temperature: float, seed: int,
                         options: DecodeOptions) -> tuple[str, list[Reading], int]:
        """Slot decoding (caller holds the model lock). Returns text, slot readings, answer tokens."""
        base = sampler(temperature, np.random.default_rng(seed)) if temperature > 0 else greedy

        def choose(slot: Slot, logprobs: np.ndarray) -> int:
            return base(slot, options.biased(slot, logprobs))

        if options.value_mode == "expected":
            choose = carry_expected(choose)
        text, readings = decode(skeleton, prompt, tokenize=self.tokenize_text,
                                logits_at=lambda tokens: self._eval_to(tokens, copy=False), choose=choose)
        if options.value_mode == "expected":
            text = rewrite_expected(skeleton, readings)
        return text, readings, len(self.tokenize_text(text))

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """The model stays loaded for the process; nothing to release per LM."""

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model, "n_ctx": self.n_ctx, "seed": self.seed}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LlamaCppEngine:
        return cls(state["model"], n_ctx=state.get("n_ctx", 4096), seed=state.get("seed", 0))

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with DSPy programs (mlflow.dspy): keep only the recipe, never the loaded model.
        state = dict(self.__dict__)
        state["_grammars"] = {}
        return state

    # -- prompts and scoring -----------------------------------------------------------------------
    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The exact prompt text the model sees, including the generation prompt."""
        loaded = self._loaded()
        if loaded.formatter is None:
            return render_plain(messages)
        return loaded.formatter(messages=list(messages)).prompt

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        loaded = self._loaded()
        if loaded.formatter is None:
            return loaded.llm.tokenize(render_plain(messages).encode("utf-8"), add_bos=True, special=False)
        result = loaded.formatter(messages=list(messages))
        return loaded.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

    def tokenize_text(self, text: str) -> list[int]:
        """Tokens of plain text appended after a prompt (no BOS, no special tokens)."""
        return self._loaded().llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def slot_logprobs(self, messages: Sequence[dict[str, str]], prefix: str, options: Sequence[str],
                      closing: str = '"') -> dict[str, float]:
        """The constrained distribution over ``options`` at a slot after ``prefix``, exactly as the
        slot decoder reads it (same tokenisation, renormalised over the options)."""
        context = self.prompt_tokens(messages) + self.tokenize_text(prefix)
        return dict(zip(options, self.read_slots([context], options, closing)[0].tolist(), strict=True))

    def read_slots(self, contexts: Sequence[Sequence[int]], options: Sequence[str], closing: str = '"', *,
                   progress: Callable[[int], Any] | None = None) -> list[np.ndarray]:
        """The constrained log-probabilities of ``options`` at the end of each context (token lists), in input order.

        The contexts are evaluated in token order, a walk of their trie: each from its longest common prefix with
        what the KV cache holds, so the perturbed texts of one review share everything before their first
        difference and a prompt's instructions and demos are evaluated once. Every reading equals the one a
        context gets alone (the same splits: at least two tokens per pass). Multi-sequence passes were
        measured and not adopted (docs/findings.md, Throughput). ``progress(n)`` is called as contexts are read.
        """
        tokenized = [self.tokenize_text(option + closing) for option in options]
        out: list[np.ndarray] = [np.empty(0)] * len(contexts)
        with self._loaded().lock:
            for i in sorted(range(len(contexts)), key=lambda i: contexts[i]):
                out[i] = option_logprobs(lambda tokens: self._eval_to(tokens, copy=False), contexts[i], tokenized,
                                         [True] * len(options))
                if progress is not None:
                    progress(1)
        return out

    def _eval_to(self, tokens: Sequence[int], *, copy: bool = True) -> np.ndarray:
        """Bring the context to exactly ``tokens`` (reusing the cached prefix); last-position logits.

        At least two tokens are evaluated: llama.cpp computes a one-token batch with other kernels (its
        GEMM path starts at two rows), so the same tokens would read differently after a one-token step.
        ``copy=False`` returns a view into llama.cpp's buffer, valid until the next evaluation (the
        slot decoder reads a few entries at once, so it skips copying the whole vocabulary).
        """
        llm = self._loaded().llm
        if len(tokens) >= self.n_ctx:
            raise ContextOverflow(f"{len(tokens)} tokens do not fit the {self.n_ctx}-token context; shorten the "
                                  "review or the demos")
        limit = max(0, min(int(llm.n_tokens), len(tokens) - 2))
        differs = np.nonzero(np.asarray(tokens[:limit], dtype=np.intc) != llm.input_ids[:limit])[0]
        common = int(differs[0]) if differs.size else limit
        llm.n_tokens = common
        llm.eval(list(tokens[common:]))
        self.stats.evaluated_tokens += len(tokens) - common
        self.stats.passes += 1
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        return np.array(logits, copy=True) if copy else logits

    def _grammar(self, schema: dict[str, Any] | None) -> Any:
        if schema is None:
            return None
        from llama_cpp import LlamaGrammar
        from llama_cpp.llama_grammar import JSON_GBNF

        key = repr(sorted(schema.items())) if schema else ""
        if key not in self._grammars:
            text = schema_to_gbnf(schema) if schema else JSON_GBNF
            self._check_grammar(text, schema)
            self._grammars[key] = LlamaGrammar.from_string(text, verbose=False)
        return self._grammars[key]

    def _check_grammar(self, text: str, schema: dict[str, Any]) -> None:
        # llama.cpp parses a grammar only when sampling starts, and a grammar it cannot parse
        # crashes the process there; parse it once here so the caller gets an error instead.
        import llama_cpp

        vocab = self._loaded().llm._model.vocab
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise ValueError("llama.cpp cannot parse the grammar made from the response schema "
                             f"{json.dumps(schema)[:300]}")
        llama_cpp.llama_sampler_free(sampler)

    def _loaded(self) -> _Loaded:
        return _load(self.model_path, self._chat, self.n_ctx)
