"""``selfx bench``: where the probe's time goes, measured side by side in one run on the same texts.

- ``raw``: llama.cpp evaluating passes of the sizes the probe makes, after the probe program's own prompt
  (the same context length), without Python around it: the limit;
- ``serial``: today's probe before the trie walk, one text at a time, everything after the program's
  instructions and demos evaluated again for each text;
- ``batched``: the probe as it runs now (``LlamaCppEngine.read_slots``): texts in token order, each from its
  longest common prefix with the KV cache;
- ``study``: ``selfx study`` at a scale (``quick``: 10 sentences; ``paper``: the study's 100), cold on a fresh
  cache and again from that cache;
- ``api``: the same probe through a local OpenAI-compatible llama.cpp server at concurrency 1 and 4.

Figures only: nothing here is a pass/fail threshold. The probe workload is the default setup's P-E program
(16 teacher demos, batch decision) on the texts a study asks about its first sentences (occlusion, LIME at
10 samples per token, and every faithfulness deletion of two rankings).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from programs.types import InputError

SCALES = {"quick": 10, "paper": 100}
PASS_SIZES = (2, 4, 8, 12, 16, 24, 32, 64)


def probe_workload(n_sentences: int, limit: int) -> list[str]:
    """The texts a study's probe asks about its first sentences, deduplicated, at most ``limit``."""
    from metrics.faithfulness import complete_ranking, plan
    from metrics.modes import CORRECTED
    from programs.data import load_examples
    from programs.explainers import explainer
    from programs.perturb import perturb

    texts: list[str] = []
    for example in load_examples("huang2023", n=n_sentences):
        tokens = example.text.split()
        texts += [example.text] + explainer("occlusion").texts(tokens) + explainer("lime").texts(tokens)
        rng = np.random.default_rng(len(texts))
        for values in (rng.uniform(-1, 1, len(tokens)), rng.uniform(-1, 1, len(tokens))):
            order = complete_ranking(list(values), None, len(tokens), 1, CORRECTED, rng)
            texts += [perturb(tokens, *p) for p in plan(len(tokens), order, "all")]
    return list(dict.fromkeys(texts))[:limit]


def _probe_program(lm: Any) -> Any:
    import dspy

    from programs.demos import build_demos
    from programs.embedded_models import DEFAULT_SETUP
    from programs.lean_adapter import LeanAdapter
    from programs.self_explain import SentimentProgram

    program = SentimentProgram("PE", value_mode=DEFAULT_SETUP.value_mode)
    with dspy.context(lm=lm, adapter=LeanAdapter()):
        program.predict.demos = build_demos("PE", DEFAULT_SETUP.demos, lm=lm, source="occlusion")
    return program


def probe_paths(lm: Any, texts: list[str]) -> dict[str, Any]:
    """Serial (full review) against the trie walk, and raw llama.cpp at the same pass sizes and context."""
    from programs.probe import ProgramProbe
    from programs.slot_decoder import option_logprobs

    engine = lm.engine
    program = _probe_program(lm)
    probe = ProgramProbe(program, lm)
    llm = engine._loaded().llm
    started = time.perf_counter()
    contexts = [engine.prompt_tokens(probe.adapter.format(program.predict.signature, program.predict.demos,
                                                          {"review": text}))
                + engine.tokenize_text(probe.answer_prefix(text))
                for text in texts]
    formatting = (time.perf_counter() - started) / len(texts)
    fixed = len(engine.prompt_tokens(probe.adapter.format(program.predict.signature, program.predict.demos,
                                                          {"review": ""}))) - 2
    options = [engine.tokenize_text(o + '"') for o in ("negative", "positive")]
    engine.read_slots(contexts[:1], ["negative", "positive"])  # the instructions and demos, evaluated once

    def measured(run: Any) -> tuple[float, int, int]:
        tokens, passes = engine.stats.evaluated_tokens, engine.stats.passes
        began = time.perf_counter()
        run()
        return time.perf_counter() - began, engine.stats.evaluated_tokens - tokens, engine.stats.passes - passes

    def serial() -> None:
        for context in contexts:
            llm.n_tokens = min(int(llm.n_tokens), fixed)  # forget the previous review: re-evaluate all of it
            option_logprobs(lambda t: engine._eval_to(t, copy=False), context, options, [True, True])

    serial_s, serial_tokens, _ = measured(serial)
    batched_s, batched_tokens, batched_passes = measured(lambda: engine.read_slots(contexts, ["negative", "positive"]))
    pass_size = batched_tokens / batched_passes
    raw = raw_throughput(engine, contexts[0][:fixed])
    raw_at_pass = float(np.interp(pass_size, list(raw), list(raw.values())))
    n = len(texts)
    return {
        "probe_texts": n, "probe_prompt_tokens": fixed,
        "probe_texts_per_second_serial": n / serial_s, "probe_texts_per_second_batched": n / batched_s,
        "probe_speedup": serial_s / batched_s,
        "tokens_per_text_serial": serial_tokens / n, "tokens_per_text_batched": batched_tokens / n,
        "probe_tokens_per_second_batched": batched_tokens / batched_s, "probe_mean_pass_tokens": pass_size,
        "raw_tokens_per_second": raw_at_pass, "raw_tokens_per_second_by_pass": raw,
        "probe_fraction_of_raw": (batched_tokens / batched_s) / raw_at_pass,
        # where a batched text's time goes: formatting and tokenising its prompt, and the model's passes
        "profile_seconds_per_text": {"format_and_tokenise": formatting,
                                     "evaluate_in_llama_cpp": batched_tokens / raw_at_pass / n,
                                     "python_around_passes": max(0.0, batched_s / n
                                                                 - batched_tokens / raw_at_pass / n)},
    }


def raw_throughput(engine: Any, prefix: list[int], sizes: tuple[int, ...] = PASS_SIZES) -> dict[int, float]:
    """Tokens/s of llama.cpp evaluating one pass of each size right after ``prefix`` (no Python per token)."""
    llm = engine._loaded().llm
    with engine._loaded().lock:
        llm.reset()
        llm.eval(prefix)
        filler = (prefix * 2)[: max(sizes)]
        out = {}
        for size in sizes:
            repeats = max(3, 96 // size)
            began = time.perf_counter()
            for _ in range(repeats):
                llm.n_tokens = len(prefix)
                llm.eval(filler[:size])
            out[size] = repeats * size / (time.perf_counter() - began)
        llm.reset()
    return out


def study_seconds(lm_spec: str, n: int) -> dict[str, float]:
    """``selfx study`` on n sentences: cold on a fresh cache, then again from that cache."""
    from experiments.study import live_study

    folder = Path(tempfile.mkdtemp(prefix="selfx-bench-"))
    out = {}
    for label in ("cold", "cached"):
        began = time.perf_counter()
        report = live_study(lm_spec=lm_spec, n=n, cache_path=str(folder / "probe.sqlite"))
        out[f"study_seconds_{label}"] = time.perf_counter() - began
        out[f"study_model_calls_{label}"] = sum(s["model_calls"] for s in report["probe_stats"].values())
    return out


def api_speedup(texts: list[str], model: str = "smollm2-135m") -> dict[str, Any]:
    """The same probe texts through a local OpenAI-compatible llama.cpp server at concurrency 1 and 4 (a
    server with 4 slots when it has them: ``$SELFX_LLAMA_SERVER``), and whether the answers agree."""
    from experiments.servers import llama_server, server_kind
    from programs.lm import make_lm
    from programs.probe import ProgramProbe
    from programs.self_explain import SentimentProgram

    out: dict[str, Any] = {"api_server": server_kind(), "api_model": model, "api_texts": len(texts)}
    readings = {}
    with llama_server(model, parallel=4) as base:
        lm = make_lm(model, api_base=base, cache=False)
        ProgramProbe(SentimentProgram("P"), lm, concurrency=1).answers(texts[:1])  # load and warm the server
        for concurrency in (1, 4):
            probe = ProgramProbe(SentimentProgram("P"), lm, concurrency=concurrency)
            began = time.perf_counter()
            answers = probe.answers(texts)
            out[f"api_texts_per_second_concurrency_{concurrency}"] = len(texts) / (time.perf_counter() - began)
            out[f"api_failures_concurrency_{concurrency}"] = sum(not a.ok for a in answers)
            readings[concurrency] = [(a.label, a.p_positive.get("logprob")) for a in answers]
    out["api_speedup"] = out["api_texts_per_second_concurrency_4"] / out["api_texts_per_second_concurrency_1"]
    # a batching server computes a request beside others in one pass: its float sums may differ slightly
    pairs = list(zip(readings[1], readings[4], strict=True))
    out["api_labels_agree"] = sum(a[0] == b[0] for a, b in pairs) / len(texts)
    out["api_max_p_difference"] = max((abs(a[1] - b[1]) for a, b in pairs if a[1] is not None and b[1] is not None),
                                      default=0.0)
    return out


def bench(lm_spec: str = "local", scale: str = "quick", *, probe_texts: int = 300, api_texts: int = 64,
          api: bool = True) -> dict[str, Any]:
    """Every figure of the benchmark, measured in this process on this machine."""
    from experiments.servers import server_kind
    from programs.lm import describe_lm, make_lm

    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; choose one of {list(SCALES)}")
    if api:
        server_kind()  # a bad $SELFX_LLAMA_SERVER stops the bench before its first measurement
    lm = make_lm(lm_spec, cache=False)
    texts = probe_workload(3, probe_texts)
    result: dict[str, Any] = {**describe_lm(lm), "scale": scale, **probe_paths(lm, texts)}
    result.update(study_seconds(lm_spec, SCALES[scale]))
    result["study_cached_share"] = result["study_seconds_cached"] / result["study_seconds_cold"]
    if api:
        result.update(api_speedup(texts[:api_texts]))
    result["median_text_chars"] = statistics.median(len(t) for t in texts)
    return result


def table(result: dict[str, Any]) -> str:
    rows = [("probe, one text at a time (full review)", result["probe_texts_per_second_serial"],
             result["tokens_per_text_serial"], None),
            ("probe, trie walk (today)", result["probe_texts_per_second_batched"], result["tokens_per_text_batched"],
             result["probe_tokens_per_second_batched"])]
    lines = [f"{result['model']} ({result['backend']}), probe workload: {result['probe_texts']} texts after a "
             f"{result['probe_prompt_tokens']}-token prompt", "",
             f"{'path':<42}{'texts/s':>10}{'tokens/text':>13}{'tokens/s':>10}"]
    lines += [f"{name:<42}{tps:>10.1f}{tpt:>13.1f}{'' if tok is None else f'{tok:>10.0f}':>10}"
              for name, tps, tpt, tok in rows]
    lines += [f"{'raw llama.cpp at the same pass size':<42}{'':>10}{'':>13}{result['raw_tokens_per_second']:>10.0f}",
              "", f"probe speed-up {result['probe_speedup']:.2f}x; "
              f"{result['tokens_per_text_serial'] / result['tokens_per_text_batched']:.2f}x fewer tokens per text; "
              f"evaluated tokens at {100 * result['probe_fraction_of_raw']:.0f} % of raw "
              f"(mean pass {result['probe_mean_pass_tokens']:.1f} tokens)",
              f"study ({result['scale']}): {result['study_seconds_cold']:.0f} s cold, "
              f"{result['study_seconds_cached']:.1f} s from the cache ({100 * result['study_cached_share']:.1f} %)"]
    if "api_speedup" in result:
        lines.append(f"API ({result['api_model']} on a local {result['api_server']} server): "
                     f"{result['api_texts_per_second_concurrency_1']:.1f} texts/s at concurrency 1, "
                     f"{result['api_texts_per_second_concurrency_4']:.1f} at 4: {result['api_speedup']:.2f}x; "
                     f"labels agree {100 * result['api_labels_agree']:.0f} %, P(positive) within "
                     f"{result['api_max_p_difference']:.1e}")
    profile = result["profile_seconds_per_text"]
    lines.append("per text: " + ", ".join(f"{k.replace('_', ' ')} {1000 * v:.1f} ms" for k, v in profile.items()))
    return "\n".join(lines)
