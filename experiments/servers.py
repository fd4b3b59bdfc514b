"""Local servers selfx starts for itself: llama.cpp's OpenAI-compatible server on 127.0.0.1 with an embedded
model (the bench's API row and the tests' real stand-in for an API)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from programs.types import InputError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(argv: list[str], ready_url: str, log: Path, *, what: str, timeout: float = 120.0) -> Iterator[None]:
    """Run a server process (in its own session, so its children stop with it) until ``ready_url`` answers; stop it
    on exit."""
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # busy in a long evaluation: stop it for good
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def llama_server(model: str = "smollm2-135m", *, n_ctx: int = 4096, timeout: float = 120.0,
                 log: Path | None = None, threads: int | None = None, parallel: int = 1) -> Iterator[str]:
    """An OpenAI-compatible llama.cpp server with an embedded model (alias = the model's name) and plain weight
    buffers; yields its ``/v1`` base URL and stops it on exit.

    llama.cpp's own ``llama-server`` when ``$SELFX_LLAMA_SERVER`` names its binary, with ``parallel`` slots that
    it batches together (each slot gets ``n_ctx`` tokens); otherwise llama-cpp-python's server, which answers
    one request at a time whatever ``parallel`` says.
    """
    from programs.embedded_models import embedded_model

    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    path = str(embedded_model(model).locate())
    # a served model is the one process doing the model's work: all cores (llama-cpp-python's default is half)
    threads = threads or os.cpu_count() or 2
    if server_kind() == "llama-server":
        argv = [os.environ["SELFX_LLAMA_SERVER"], "--model", path, "--alias", model,
                "--host", "127.0.0.1", "--port", str(port), "--ctx-size", str(n_ctx * parallel),
                "--parallel", str(parallel), "--threads", str(threads), "--threads-batch", str(threads),
                "--no-repack", "--no-webui"]
    else:
        argv = [sys.executable, "-c", "from programs.llama_engine import plain_weight_buffers; "
                "plain_weight_buffers(); import runpy; runpy.run_module('llama_cpp.server', run_name='__main__')",
                "--model", path, "--model_alias", model, "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", str(n_ctx), "--n_threads", str(threads)]
    with served(argv, f"{base}/models", log or Path(tempfile.mkdtemp(prefix="selfx-server-")) / "server.log",
                what="llama.cpp server", timeout=timeout):
        yield base


def server_kind() -> str:
    """Which llama.cpp server ``llama_server`` starts: ``llama-server`` or ``llama-cpp-python``."""
    binary = os.environ.get("SELFX_LLAMA_SERVER")
    if not binary:
        return "llama-cpp-python"
    if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
        raise InputError(f"SELFX_LLAMA_SERVER={binary} is not an executable file: point it at llama.cpp's "
                         "llama-server binary (docs/scale-out.md) or unset it to use llama-cpp-python's server")
    return "llama-server"
