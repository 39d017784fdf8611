"""Starts the real `tandem serve` binary on 127.0.0.1 for the SDK tests.

The binary is `$TANDEM_BIN`, else `target/debug/tandem` of this checkout (built by
`cargo test --workspace`, which `cargo xtask test` runs first); the model is `$TANDEM_MODEL`,
else the default model in the cache.
"""

import os
import pathlib
import subprocess
import tempfile
import threading

import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL_ID = "smol"


def binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("TANDEM_BIN", ROOT / "target" / "debug" / "tandem"))
    assert path.exists(), f"{path} not found: build it with `cargo build -p control-plane`"
    return path


def model() -> pathlib.Path:
    cache = pathlib.Path(os.environ.get("TANDEM_CACHE", pathlib.Path.home() / ".cache" / "tandem"))
    path = pathlib.Path(
        os.environ.get("TANDEM_MODEL", cache / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    assert path.exists(), f"default model missing at {path}: run `cargo xtask setup`"
    return path


class Server:
    """A running `tandem serve`."""

    def __init__(self, *extra: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") or k == "TANDEM_CACHE"}
        # Each server keeps its ledger in a scratch folder.
        env["TANDEM_DATA_DIR"] = tempfile.mkdtemp(prefix="tandem-data-")
        args = [
            str(binary()), "serve", "--model", str(model()), "--model-id", MODEL_ID,
            "--host", "127.0.0.1", "--port", "0", "--threads", "2", *extra,
        ]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
        self.log = []
        self.base = None
        for line in self.proc.stderr:
            self.log.append(line)
            if "listening on http://" in line:
                self.base = "http://" + line.split("listening on http://")[1].split()[0]
            if "tandem: ready" in line:
                break
        else:
            raise RuntimeError("tandem serve did not start:\n" + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key="not-needed", max_retries=0, timeout=300)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def server():
    s = Server("--ctx-size", "512", "--body-limit", "65536")
    yield s
    s.stop()


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return server.client()
