"""API keys and per-minute limits as the official `openai` Python SDK sees them: a real
`tandem serve` on the default model with tenants set up through the admin API."""

import json
import urllib.parse
import urllib.request

import openai
import pytest

from conftest import MODEL_ID, Server

ADMIN = "python-admin-key-0123456789"


class Admin:
    """The admin API over urllib."""

    def __init__(self, base):
        self.base = base + "/admin/v1"

    def call(self, method, path, body=None, params=None):
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())


@pytest.fixture(scope="module")
def tenant_server():
    s = Server("--ctx-size", "512", "--admin-key", ADMIN)
    admin = Admin(s.base)
    assert admin.call("POST", "/tiers", {"id": "trial", "requests_per_minute": 3})[0] == 201
    assert admin.call("POST", "/tenants", {"id": "acme", "tier": "trial"})[0] == 201
    key = admin.call("POST", "/tenants/acme/keys", {"name": "sdk"})[1]["key"]
    yield s, admin, key
    s.stop()


def chat(client):
    return client.chat.completions.with_raw_response.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0
    )


def test_keys_limits_and_usage_through_the_sdk(tenant_server):
    s, admin, key = tenant_server
    bad = openai.OpenAI(base_url=s.base + "/v1", api_key="tdm-" + "x" * 52, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "invalid_api_key"

    client = openai.OpenAI(base_url=s.base + "/v1", api_key=key, max_retries=0, timeout=300)
    remaining = []
    for _ in range(3):
        raw = chat(client)
        completion = raw.parse()
        assert completion.choices[0].message.content
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
        assert raw.headers["x-request-id"].startswith("req_")
    assert remaining == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as e:
        chat(client)
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after"]) >= 1

    _, usage = admin.call("GET", "/usage", params={"tenant": "acme", "group_by": "tenant"})
    row = usage["data"][0]
    # Three answered, one refused (the bad key has no tenant).
    assert row["group"] == "acme" and row["requests"] == 4 and row["errors"] == 1
    assert row["completion_tokens"] > 0
