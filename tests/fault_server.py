"""A fault-injecting OpenAI-compatible server on 127.0.0.1, in front of a real one.

Each chat-completion request takes the next fault from a script; when the script runs out, or the fault
is ``ok``, the request is forwarded to the real server (llama.cpp) and its answer returned unchanged.
Faults: ``429`` (with Retry-After), ``500``, ``hang`` (no answer for longer than the client waits),
``truncated`` (a 200 whose JSON answer stops midway) and ``schema`` (a 200 whose answer is valid JSON that
violates the schema). ``served`` counts what was served, by kind.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _completion(content: str, model: str) -> bytes:
    return json.dumps({
        "id": "fault", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


class FaultServer:
    def __init__(self, upstream: str, script: list[str], *, hang_seconds: float = 4.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.script = list(script)
        self.hang_seconds = hang_seconds
        self.served: Counter[str] = Counter()
        self.requests: list[dict] = []  # the chat-completion bodies as the client sent them
        self._lock = threading.Lock()

    def next_fault(self) -> str:
        with self._lock:
            fault = self.script.pop(0) if self.script else "ok"
            self.served[fault] += 1
            return fault

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                with urllib.request.urlopen(server.upstream + self.path.removeprefix("/v1"), timeout=30) as r:
                    self._send(r.status, r.read())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                model = json.loads(body or b"{}").get("model", "m")
                fault = server.next_fault() if self.path.endswith("/chat/completions") else "ok"
                if self.path.endswith("/chat/completions"):
                    server.requests.append(json.loads(body))
                if fault == "429":
                    self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "1"})
                elif fault == "500":
                    self._send(500, b'{"error": {"message": "internal error"}}')
                elif fault == "hang":
                    time.sleep(server.hang_seconds)
                    self._send(503, b'{"error": {"message": "too late"}}')
                elif fault == "truncated":
                    self._send(200, _completion('{"label": "posi', model))
                elif fault == "schema":
                    self._send(200, _completion('{"label": "maybe", "confidence": 7}', model))
                else:
                    request = urllib.request.Request(server.upstream + self.path.removeprefix("/v1"), data=body,
                                                     headers={"Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(request, timeout=120) as r:
                            self._send(r.status, r.read())
                    except urllib.error.HTTPError as error:  # the real server's own errors pass through
                        self._send(error.code, error.read())

        return Handler


@contextmanager
def fault_server(upstream: str, script: list[str], *, hang_seconds: float = 4.0) -> Iterator[tuple[str, FaultServer]]:
    """Serve on 127.0.0.1 (a free port); yields the ``/v1`` base URL and the server's state."""
    state = FaultServer(upstream, script, hang_seconds=hang_seconds)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        httpd.shutdown()
        httpd.server_close()
