"""A `tandem serve` gateway in front of two `tandem serve` upstreams and llama.cpp's
`llama-server`, driven by the `openai` SDK: answers through the gateway equal the upstreams' own,
an upstream killed under a load of concurrent streams fails only the streams it had started
(with an error event, none hangs), the others move on, the breaker keeps further requests away,
and a restarted upstream rejoins. `/v1/route` answers browser capability reports by its rules.

llama-server is `$TANDEM_LLAMA_SERVER` (`cargo xtask test` builds it once into the cache)."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import openai
import pytest

from conftest import binary, model

ASK = [{"role": "user", "content": "Name three colors of the rainbow."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server process with its log; waits until `ready_url` answers 200."""

    def __init__(self, args, ready_url, env=None):
        self.args = args
        self.ready_url = ready_url
        self.env = env
        self.start()

    def start(self):
        self.log = []
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited:\n" + "".join(self.log))
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.args[0]} was not ready:\n" + "".join(self.log))

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") or k == "TANDEM_CACHE"}
    # Each server keeps its ledger in a scratch folder.
    env["TANDEM_DATA_DIR"] = tempfile.mkdtemp(prefix="tandem-data-")
    return env


def tandem_upstream(port):
    return Proc(
        [str(binary()), "serve", "--model", str(model()), "--model-id", "smol", "--host", "127.0.0.1",
         "--port", str(port), "--threads", "1", "--ctx-size", "1024", "--max-seqs", "8"],
        f"http://127.0.0.1:{port}/ready",
        env=clean_env(),
    )


@pytest.fixture(scope="module")
def cluster():
    llama = os.environ.get("TANDEM_LLAMA_SERVER")
    assert llama and pathlib.Path(llama).exists(), "TANDEM_LLAMA_SERVER must name llama-server (cargo xtask test builds it)"
    ports = {name: free_port() for name in ("a", "b", "llama", "gw")}
    a = tandem_upstream(ports["a"])
    b = tandem_upstream(ports["b"])
    lc = Proc(
        [llama, "-m", str(model()), "--host", "127.0.0.1", "--port", str(ports["llama"]), "-t", "1",
         "-c", "4096", "-np", "4", "--alias", "smol-llamacpp", "--log-disable"],
        f"http://127.0.0.1:{ports['llama']}/health",
    )
    toml = f"""
[routing]
policy = "balanced"
breaker_failures = 2
breaker_cooldown_ms = 1000
breaker_successes = 1
health_interval_ms = 250
retry_backoff_ms = 20

[[upstreams]]
id = "a"
url = "http://127.0.0.1:{ports['a']}"
first_token_timeout_ms = 60000

[[upstreams]]
id = "b"
url = "http://127.0.0.1:{ports['b']}/v1"
first_token_timeout_ms = 60000

[[upstreams]]
id = "llama"
url = "http://127.0.0.1:{ports['llama']}"
"""
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(toml)
    cfg.close()
    gw = Proc(
        [str(binary()), "serve", "--config", cfg.name, "--host", "127.0.0.1", "--port", str(ports["gw"])],
        f"http://127.0.0.1:{ports['gw']}/ready",
        env=clean_env(),
    )
    yield {"a": a, "b": b, "llama": lc, "gw": gw, "ports": ports}
    for p in (gw, a, b, lc):
        p.stop()
    os.unlink(cfg.name)


def client(port) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)


def metric(port, prefix) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_models_of_every_upstream_are_listed(cluster):
    gw = client(cluster["ports"]["gw"])
    ids = {m.id for m in gw.models.list().data}
    assert {"smol", "smol-llamacpp"} <= ids


def test_answers_through_the_gateway_equal_the_upstreams_own(cluster):
    gw = client(cluster["ports"]["gw"])
    for name, port, model_name in (("a", cluster["ports"]["a"], "smol"), ("llama", cluster["ports"]["llama"], "smol-llamacpp")):
        direct = client(port).chat.completions.create(model=model_name, messages=ASK, max_tokens=24, temperature=0)
        via = gw.chat.completions.create(model=model_name, messages=ASK, max_tokens=24, temperature=0)
        assert via.choices[0].message.content == direct.choices[0].message.content, name
        assert via.usage.completion_tokens == direct.usage.completion_tokens, name
        assert via.usage.prompt_tokens == direct.usage.prompt_tokens, name
        stream = gw.chat.completions.create(
            model=model_name, messages=ASK, max_tokens=24, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == direct.choices[0].message.content, name
        assert chunks[-1].usage.completion_tokens == direct.usage.completion_tokens, name
    # The legacy endpoint, with token-id prompts and logprobs, passes through too.
    direct = client(cluster["ports"]["b"]).completions.create(model="smol", prompt="The sky is", max_tokens=8, temperature=0, logprobs=2)
    via = gw.completions.create(model="smol", prompt="The sky is", max_tokens=8, temperature=0, logprobs=2)
    assert via.choices[0].text == direct.choices[0].text
    assert via.choices[0].logprobs.tokens == direct.choices[0].logprobs.tokens
    # Errors of the request come back as the upstream said them.
    with pytest.raises(openai.BadRequestError):
        gw.chat.completions.create(model="smol", messages=[{"role": "wizard", "content": "x"}], max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        gw.chat.completions.create(model="nope", messages=ASK, max_tokens=4)


def test_a_client_that_leaves_cancels_the_upstream_request(cluster):
    ports = cluster["ports"]
    gw = client(ports["gw"])
    stream = gw.chat.completions.create(
        model="smol-llamacpp", messages=[{"role": "user", "content": "Tell a long story."}],
        max_tokens=400, temperature=0, stream=True, extra_body={"ignore_eos": True},
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    # llama-server frees the slot once the gateway drops the connection.
    deadline = time.time() + 20
    while time.time() < deadline:
        slots = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ports['llama']}/slots", timeout=5).read())
        if not any(s.get("is_processing") for s in slots):
            break
        time.sleep(0.2)
    assert not any(s.get("is_processing") for s in slots), slots


def run_stream(gw, results, i, started, tokens):
    """Streams a long answer; records in `started` the upstream once the answer starts, and in
    `results` ("ok" | "error", tokens or message, upstream, when it ended)."""
    upstream = None
    try:
        raw = gw.chat.completions.with_raw_response.create(
            model="smol", messages=[{"role": "user", "content": f"Tell a long story number {i}."}],
            max_tokens=tokens, temperature=0, stream=True, extra_body={"ignore_eos": True},
        )
        upstream = raw.headers.get("x-tandem-upstream")
        started[i] = upstream
        n = 0
        for c in raw.parse():
            if c.choices and c.choices[0].delta.content:
                n += 1
        results[i] = ("ok", n, upstream, time.time())
    except openai.APIError as e:
        results[i] = ("error", str(e), upstream, time.time())


def test_killing_an_upstream_under_load(cluster):
    ports = cluster["ports"]
    gw = client(ports["gw"])
    # Warm both tandem upstreams so the router has measurements of each.
    for _ in range(4):
        gw.chat.completions.create(model="smol", messages=ASK, max_tokens=4, temperature=0)
    results, started, threads = {}, {}, []

    def launch(tokens):
        t = threading.Thread(target=run_stream, args=(gw, results, len(threads), started, tokens))
        threads.append(t)
        t.start()

    # Long streams until at least one runs on a (the router spreads load by its measurements,
    # which need not favour a at first): 6, then one more at a time, at most 16.
    for _ in range(6):
        launch(400)
    deadline = time.time() + 60
    while time.time() < deadline and not (len(started) == len(threads) and "a" in started.values()):
        if len(started) == len(threads) and len(threads) < 16:
            launch(400)
        time.sleep(0.05)
    assert "a" in started.values(), f"no stream went to a: {started}"
    early = len(threads)
    killed_at = time.time()
    cluster["a"].kill()
    for _ in range(4):
        launch(96)
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a stream hung"
    assert len(results) == len(threads)
    # The streams in flight on a when it died end with an error (or had ended before); those on
    # b complete.
    for i in range(early):
        r = results[i]
        if r[2] == "a":
            assert r[0] == "error" or r[3] < killed_at, results
        else:
            assert r[:3] == ("ok", 400, "b"), results
    assert any(results[i][2] == "a" and results[i][0] == "error" for i in range(early)), results
    # Streams sent after the kill all completed on b (moved there before their first token).
    assert all(results[i][:3] == ("ok", 96, "b") for i in range(early, len(threads))), results
    # The breaker is open now (half-open for a moment after each cool-down, until a probe or a
    # trial fails again): no further errors.
    deadline = time.time() + 10
    while metric(ports["gw"], 'tandem_upstream_breaker_state{upstream="a"}') != 2 and time.time() < deadline:
        time.sleep(0.05)
    assert metric(ports["gw"], 'tandem_upstream_breaker_state{upstream="a"}') == 2
    for _ in range(6):
        r = gw.chat.completions.create(model="smol", messages=ASK, max_tokens=8, temperature=0)
        assert r.choices[0].message.content
    assert metric(ports["gw"], 'tandem_upstream_breaker_state{upstream="a"}') != 0
    # Restart it: probes close the breaker and it takes requests again.
    cluster["a"].start()
    deadline = time.time() + 30
    while metric(ports["gw"], 'tandem_upstream_breaker_state{upstream="a"}') != 0 and time.time() < deadline:
        time.sleep(0.2)
    assert metric(ports["gw"], 'tandem_upstream_breaker_state{upstream="a"}') == 0
    before = metric(ports["gw"], 'tandem_upstream_requests_total{upstream="a",outcome="ok"}')
    for _ in range(12):
        gw.chat.completions.create(model="smol", messages=ASK, max_tokens=4, temperature=0)
    assert metric(ports["gw"], 'tandem_upstream_requests_total{upstream="a",outcome="ok"}') > before


def route(port, capabilities, prompt_tokens=50, max_tokens=64):
    body = json.dumps({"model": "smol", "prompt_tokens": prompt_tokens, "max_tokens": max_tokens,
                       "capabilities": capabilities}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/route", data=body,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_route_answers_capability_reports(cluster):
    port = cluster["ports"]["gw"]
    models = client(port).models.list().model_dump()["data"]
    smol = next(m for m in models if m["id"] == "smol")
    variants = smol["browser_variants"]
    assert variants, smol
    v = variants[0]
    assert re.fullmatch(r"[0-9a-f]{64}", v["sha256"]) and v["bytes"] > 0
    # The variant's URL serves the file (an upstream's, absolute).
    head = urllib.request.urlopen(urllib.request.Request(v["url"], method="HEAD"), timeout=10)
    assert int(head.headers["content-length"]) == v["bytes"]
    gpu = {"available": True, "adapter": {"vendor": "nvidia", "architecture": "ada", "is_fallback": False},
           "features": ["shader-f16"], "limits": {"maxBufferSize": 2**31, "maxStorageBufferBindingSize": 2**30}}
    base = {"wasm_simd": True, "cross_origin_isolated": True, "hardware_concurrency": 8, "device_memory_gb": 8,
            "storage_available_bytes": 10**10, "cached_variants": [], "measured": None}
    # No WebGPU and no WASM SIMD: the server.
    a = route(port, {**base, "webgpu": None, "wasm_simd": False})
    assert a["route"] == "server" and a["variant"] is None and "no_webgpu" in a["reasons"]
    # Too little memory: the server.
    a = route(port, {**base, "webgpu": gpu, "device_memory_gb": 0.1})
    assert a["route"] == "server" and "insufficient_memory" in a["reasons"]
    # A cached variant on a fast device: the browser, no download.
    a = route(port, {**base, "webgpu": gpu, "cached_variants": [v["sha256"]],
                     "measured": {"decode_tok_s": 400.0, "prefill_tok_s": 4000.0}})
    assert a["route"] == "browser", a
    assert a["variant"]["sha256"] == v["sha256"]
    assert "variant_cached" in a["reasons"]
    assert a["estimates"]["browser"]["cost_usd"] == 0
    assert a["estimates"]["server"]["ttft_ms"] > 0
    # A slow measured device under the fastest policy's rules loses to the server when uncached.
    a = route(port, {**base, "webgpu": gpu, "measured": {"decode_tok_s": 2.0, "prefill_tok_s": 10.0}})
    assert a["route"] == "server" and "download_required" in a["reasons"], a
