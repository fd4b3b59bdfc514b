"""A DSPy engine for OpenAI-compatible servers (llama.cpp server, vLLM, TGI, ...) via the ``openai`` client.

Why not DSPy's own OpenAI route: servers differ in how they take a JSON schema. OpenAI and vLLM
take ``{"type": "json_schema", ...}``; llama.cpp's server rejects that with HTTP 500 and wants its
own ``{"type": "json_object", "schema": ...}``. With ``schema_style="auto"`` the engine tries the
OpenAI form once and falls back to the llama.cpp form if the server refuses it.

The API key is read from the environment variable named by ``api_key_env`` when the client is
made; it is never stored in the engine's state, so it cannot reach a saved program or MLflow.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Literal

from programs.json_grammar import schema_from_response_format
from programs.llama_engine import DEFAULT_MAX_TOKENS, request_messages
from programs.types import InputError

SchemaStyle = Literal["auto", "json_schema", "json_object"]
_NO_KEY = "no-key"  # placeholder for keyless local servers; not a secret


class OpenAICompatEngine:
    """Chat completions against ``api_base`` with structured output and log-probabilities."""

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "response_format",
                                  "logprobs", "top_logprobs"})

    def __init__(self, model: str, *, api_base: str, api_key_env: str = "OPENAI_API_KEY",
                 schema_style: SchemaStyle = "auto", timeout: float = 120.0, max_retries: int = 3) -> None:
        if not api_base.startswith(("http://", "https://")):
            raise InputError(f"--api-base must be an http(s) URL such as http://127.0.0.1:8000/v1, got {api_base!r}")
        if schema_style not in ("auto", "json_schema", "json_object"):
            raise ValueError(f"schema_style must be auto, json_schema or json_object, got {schema_style!r}")
        self.model = model
        self.api_base = api_base.rstrip("/")
        self.api_key_env = api_key_env
        self.schema_style: SchemaStyle = schema_style
        self.timeout = timeout
        self.max_retries = max_retries
        self._client_obj: Any = None
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Any:
        import openai
        from dspy.clients.engines.base import validate_request
        from dspy.lm15 import Message, Response, Usage

        validate_request(request)
        config = request.config
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request_messages(request),
            "temperature": 0.0 if config.temperature is None else config.temperature,
            "max_tokens": config.max_tokens or DEFAULT_MAX_TOKENS,
        }
        # the protocol's own penalties, explicitly off: an explanation copies the review's words. llama.cpp's
        # repeat_penalty is outside the protocol and stays the server's (docs/scale-out.md)
        kwargs.update(frequency_penalty=0.0, presence_penalty=0.0)
        if config.top_p is not None:
            kwargs["top_p"] = config.top_p
        if config.stop:
            kwargs["stop"] = list(config.stop)
        if config.seed is not None:
            kwargs["seed"] = config.seed
        if config.logprobs is not None:
            kwargs["logprobs"] = True
            if config.logprobs > 0:
                kwargs["top_logprobs"] = config.logprobs
        schema = schema_from_response_format(config.response_format)
        try:
            out = self._create(kwargs, schema)
        except openai.APIConnectionError as exc:  # after the client's own retries
            raise ConnectionError(f"cannot reach the API at {self.api_base} ({exc}): start the server or fix "
                                  "--api-base") from exc
        choice = out.choices[0]
        usage = out.usage
        return Response(
            id=out.id or None,
            model=request.model,
            message=Message.assistant(choice.message.content or ""),
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            usage=Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens) if usage else Usage(),
            logprobs=_logprobs(choice),
        )

    def _create(self, kwargs: dict[str, Any], schema: dict[str, Any] | None) -> Any:
        import openai

        client = self._client()
        if schema is None:
            return client.chat.completions.create(**kwargs)
        if self.schema_style in ("auto", "json_schema"):
            try:
                return client.chat.completions.create(**kwargs, response_format={
                    "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
            except (openai.BadRequestError, openai.InternalServerError, openai.UnprocessableEntityError):
                if self.schema_style == "json_schema":
                    raise
                self.schema_style = "json_object"  # this server wants llama.cpp's form; remember it
        return client.chat.completions.create(**kwargs, response_format={"type": "json_object", "schema": schema})

    def _client(self) -> Any:
        with self._lock:
            if self._client_obj is None:
                import openai

                key = os.environ.get(self.api_key_env) or _NO_KEY
                self._client_obj = openai.OpenAI(base_url=self.api_base, api_key=key, timeout=self.timeout,
                                                 max_retries=self.max_retries)
            return self._client_obj

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        with self._lock:
            if self._client_obj is not None:
                self._client_obj.close()
                self._client_obj = None

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model, "api_base": self.api_base, "api_key_env": self.api_key_env,
                "schema_style": self.schema_style}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> OpenAICompatEngine:
        return cls(state["model"], api_base=state["api_base"], api_key_env=state.get("api_key_env", "OPENAI_API_KEY"),
                   schema_style=state.get("schema_style", "auto"))

    def __getstate__(self) -> dict[str, Any]:
        # The client holds the key: never pickle it.
        state = dict(self.__dict__)
        state["_client_obj"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _logprobs(choice: Any) -> tuple[Any, ...] | None:
    from dspy.lm15 import TokenLogprob, TopLogprob

    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return tuple(
        TokenLogprob(token=item.token, logprob=float(item.logprob),
                     top=tuple(TopLogprob(token=t.token, logprob=float(t.logprob)) for t in (item.top_logprobs or ())))
        for item in content
    )
