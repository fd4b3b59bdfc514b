"""The OpenAI-compatible path against a real llama.cpp server on 127.0.0.1 serving the same GGUF."""

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from experiments.check_lm import check_lm
from programs.embedded_models import embedded_model
from tests.conftest import require_shared

pytestmark = [pytest.mark.server, pytest.mark.model]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model("smollm2-135m").locate()),
             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/models", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail(f"llama.cpp server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_typed_round_trip_against_the_server(server):
    require_shared("sst2", "validation.jsonl")
    summary = check_lm("openai/smollm2", api_base=server, n=3, progress=False)
    assert summary["backend"] == "openai-compatible"
    assert summary["parsed"] == 3, summary["failures"]
    assert summary["tokens_per_example"] > 0


def test_server_logprobs_arrive_as_lm15_logprobs(server):
    from programs.lm import make_lm

    lm = make_lm("openai/smollm2", api_base=server, cache=False)
    lm("Say yes.", max_tokens=3, logprobs=True, top_logprobs=3)
    assert lm.history[-1]["outputs"] and lm.engine.schema_style in ("auto", "json_schema", "json_object")
