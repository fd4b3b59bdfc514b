"""A scripted DSPy engine: replays fixed replies and records every request (a test double for an LM)."""

from __future__ import annotations


class ScriptedEngine:
    supports_response_schema = True
    supported_params = frozenset({"temperature", "max_tokens", "response_format", "logprobs", "top_logprobs"})

    def __init__(self, replies):
        self.replies = replies if callable(replies) else list(replies)
        self.requests = []

    def complete(self, request):
        from dspy.lm15 import Message, Response, Usage

        self.requests.append(request)
        text = self.replies(request) if callable(self.replies) else self.replies.pop(0)
        return Response(id=None, model=request.model, message=Message.assistant(text), finish_reason="stop",
                        usage=Usage(input_tokens=1, output_tokens=1))


def scripted_lm(replies):
    import dspy

    return dspy.LM("scripted/test", engine=ScriptedEngine(replies), cache=False)
