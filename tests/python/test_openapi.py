"""`/openapi.json` of a real `tandem serve`: a valid OpenAPI 3.1 document, and the server's
real answers (whole and streamed, successes and errors, the admin API's too) match the schemas
it documents for them, as do the request bodies the tests send."""

import json
import urllib.error
import urllib.parse
import urllib.request

import jsonschema
import openapi_spec_validator
import pytest

from conftest import MODEL_ID, Server

ADMIN = "openapi-admin-key-0123456789"


def fetch(base, method, path, body=None, token=None, params=None):
    """(status, content type, body text) of one request."""
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


class Document:
    """The served document, with validators for its schemas."""

    def __init__(self, base):
        status, _, text = fetch(base, "GET", "/openapi.json")
        assert status == 200
        self.doc = json.loads(text)

    def _validate(self, schema, instance, what):
        # A root holding the components, so that `#/components/...` references resolve.
        root = dict(schema)
        root["components"] = self.doc["components"]
        errors = list(jsonschema.Draft202012Validator(root).iter_errors(instance))
        assert not errors, f"{what}: {errors[0].message} at {list(errors[0].absolute_path)}\n{json.dumps(instance)[:2000]}"

    def operation(self, path, method):
        op = self.doc["paths"].get(path, {}).get(method.lower())
        assert op is not None, f"{method} {path} is not in the document"
        return op

    def check_request(self, path, method, body):
        content = self.operation(path, method)["requestBody"]["content"]["application/json"]
        self._validate(content["schema"], body, f"request {method} {path}")

    def check_response(self, path, method, status, content_type, text):
        responses = self.operation(path, method)["responses"]
        assert str(status) in responses, f"{method} {path} answered {status}, which is not documented: {text[:500]}"
        content = responses[str(status)].get("content", {})
        media = content_type.split(";")[0].strip()
        assert media in content, f"{method} {path} {status} answered {media}, documented {list(content)}"
        schema = content[media]["schema"]
        if media == "text/event-stream":
            events = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
            events = [e for e in events if e != "[DONE]"]
            assert events, text
            for e in events:
                self._validate(schema, json.loads(e), f"event of {method} {path}")
            return len(events)
        if media == "application/json":
            self._validate(schema, json.loads(text), f"{method} {path} {status}")
        return 1


@pytest.fixture(scope="module")
def doc(server):
    return Document(server.base)


def exchange(doc, base, method, path, body=None, template=None, token=None, params=None, expect=None):
    """Sends a request (its body checked against the document first), checks the answer
    against the document, and returns (status, body text)."""
    template = template or path
    if body is not None:
        doc.check_request(template, method, body)
    status, ctype, text = fetch(base, method, path, body, token, params)
    if expect is not None:
        assert status == expect, f"{method} {path}: {status} {text[:500]}"
    doc.check_response(template, method, status, ctype, text)
    return status, text


def test_the_document_is_valid_openapi(doc):
    openapi_spec_validator.validate(doc.doc)
    assert doc.doc["openapi"].startswith("3.1")
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                 "/v1/models/{id}", "/v1/route", "/infill", "/openapi.json", "/metrics"]:
        assert path in doc.doc["paths"], path


def test_generation_answers_match_their_schemas(server, doc):
    base = server.base
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}]
    chat = {"model": MODEL_ID, "messages": messages, "max_tokens": 8, "temperature": 0,
            "logprobs": True, "top_logprobs": 2, "n": 2, "seed": 1, "stop": ["\n\n"]}
    exchange(doc, base, "POST", "/v1/chat/completions", chat, expect=200)
    streamed = dict(chat, stream=True, stream_options={"include_usage": True})
    status, text = exchange(doc, base, "POST", "/v1/chat/completions", streamed, expect=200)
    assert '"usage":{' in text.replace(" ", "")
    structured = {"model": MODEL_ID, "messages": messages, "max_tokens": 24,
                  "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": {
                      "type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}}}}
    exchange(doc, base, "POST", "/v1/chat/completions", structured, expect=200)
    tools = {"model": MODEL_ID, "messages": messages, "max_tokens": 48,
             "tools": [{"type": "function", "function": {"name": "pick", "parameters": {
                 "type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}}}],
             "tool_choice": "required"}
    exchange(doc, base, "POST", "/v1/chat/completions", tools, expect=200)

    completion = {"model": MODEL_ID, "prompt": ["Once upon", "The sky"], "max_tokens": 6, "logprobs": 2,
                  "echo": True, "temperature": 0}
    exchange(doc, base, "POST", "/v1/completions", completion, expect=200)
    exchange(doc, base, "POST", "/v1/completions", dict(completion, prompt=[1, 2, 3], stream=True,
                                                         stream_options={"include_usage": True}), expect=200)

    for fmt in ["float", "base64"]:
        exchange(doc, base, "POST", "/v1/embeddings",
                 {"model": MODEL_ID, "input": ["a cat", "a dog"], "encoding_format": fmt}, expect=200)


def test_other_answers_and_errors_match_their_schemas(server, doc):
    base = server.base
    exchange(doc, base, "GET", "/v1/models", expect=200)
    exchange(doc, base, "GET", f"/v1/models/{MODEL_ID}", template="/v1/models/{id}", expect=200)
    exchange(doc, base, "GET", "/v1/models/no/such-model", template="/v1/models/{id}", expect=404)
    exchange(doc, base, "POST", "/v1/route", {
        "model": MODEL_ID, "prompt_tokens": 20, "max_tokens": 30,
        "capabilities": {"webgpu": {"available": True, "adapter": {"vendor": "x", "architecture": "y"},
                                    "features": ["shader-f16"], "limits": {"maxBufferSize": 268435456}},
                         "wasm_simd": True, "hardware_concurrency": 8, "device_memory_gb": 8}}, expect=200)
    exchange(doc, base, "GET", "/health", expect=200)
    exchange(doc, base, "GET", "/ready", expect=200)
    status, ctype, text = fetch(base, "GET", "/metrics")
    doc.check_response("/metrics", "GET", status, ctype, text)
    # Errors: a field of the wrong type, an unknown model, a model without FIM tokens, a body
    # over the limit.
    bad = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}
    status, ctype, text = fetch(base, "POST", "/v1/chat/completions", bad)
    assert status == 400
    doc.check_response("/v1/chat/completions", "POST", status, ctype, text)
    exchange(doc, base, "POST", "/v1/completions", {"model": "nope", "prompt": "x"}, expect=404)
    exchange(doc, base, "POST", "/infill", {"input_prefix": "def f(", "input_suffix": ")"}, expect=400)
    exchange(doc, base, "POST", "/v1/embeddings", {"model": MODEL_ID, "input": "x" * 70000}, expect=413)
    exchange(doc, base, "POST", "/v1/usage/browser",
             {"model": MODEL_ID, "prompt_tokens": 3, "completion_tokens": 4}, expect=200)
    exchange(doc, base, "POST", "/v1/usage/browser",
             {"model": MODEL_ID, "prompt_tokens": 3, "completion_tokens": 4, "cached_tokens": 9}, expect=400)


@pytest.fixture(scope="module")
def admin_server():
    s = Server("--ctx-size", "512", "--admin-key", ADMIN)
    yield s
    s.stop()


def test_admin_api_bodies_and_answers_match_their_schemas(admin_server):
    base = admin_server.base
    doc = Document(base)

    def admin(method, path, body=None, template=None, expect=None, params=None):
        return exchange(doc, base, method, "/admin/v1" + path, body, template and "/admin/v1" + template,
                        token=ADMIN, params=params, expect=expect)

    admin("POST", "/tiers", {"id": "gold", "requests_per_minute": 100, "monthly_budget_usd": 5.0,
                             "allowed_models": [MODEL_ID], "policy": "cheapest"}, expect=201)
    admin("POST", "/tiers", {"id": "gold"}, expect=409)
    admin("GET", "/tiers", expect=200)
    admin("PATCH", "/tiers/gold", {"tokens_per_minute": 10000, "monthly_budget_usd": None},
          template="/tiers/{id}", expect=200)
    admin("GET", "/tiers/gold", template="/tiers/{id}", expect=200)
    admin("POST", "/tiers", {"id": "spare"}, expect=201)
    admin("DELETE", "/tiers/spare", template="/tiers/{id}", expect=200)
    admin("POST", "/tenants", {"id": "acme", "name": "Acme", "tier": "gold",
                               "overrides": {"requests_per_minute": 50}}, expect=201)
    admin("POST", "/tenants", {"tier": "none-such"}, expect=400)
    admin("GET", "/tenants", expect=200)
    admin("PATCH", "/tenants/acme", {"name": "Acme Inc", "overrides": {"browser_routing": False}},
          template="/tenants/{id}", expect=200)
    admin("GET", "/tenants/acme", template="/tenants/{id}", expect=200)
    _, text = admin("POST", "/tenants/acme/keys", {"name": "ci", "tokens_per_minute": 5000},
                    template="/tenants/{id}/keys", expect=201)
    key = json.loads(text)
    admin("GET", "/tenants/acme/keys", template="/tenants/{id}/keys", expect=200)
    admin("GET", "/upstreams", expect=200)

    # A request with the key, then the usage reports and the invoice it appears in.
    chat = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    exchange(doc, base, "POST", "/v1/chat/completions", chat, token=key["key"], expect=200)
    exchange(doc, base, "POST", "/v1/usage/browser",
             {"model": MODEL_ID, "prompt_tokens": 10, "completion_tokens": 20, "path": "webgpu"},
             token=key["key"], expect=200)
    exchange(doc, base, "GET", "/v1/usage", token=key["key"], params={"group_by": "route"}, expect=200)
    status, ctype, text = fetch(base, "GET", "/v1/usage", token=key["key"], params={"format": "csv"})
    doc.check_response("/v1/usage", "GET", status, ctype, text)
    assert text.startswith("group,")
    admin("GET", "/usage", params={"group_by": "model"}, expect=200)
    _, text = admin("GET", "/invoices/acme/2026-11", template="/invoices/{tenant}/{period}", expect=200)
    status, ctype, text = fetch(base, "GET", "/admin/v1/invoices/acme/2026-11", token=ADMIN,
                                params={"format": "html"})
    doc.check_response("/admin/v1/invoices/{tenant}/{period}", "GET", status, ctype, text)
    admin("GET", "/invoices/acme/2026-13", template="/invoices/{tenant}/{period}", expect=400)

    # Errors of the admin API: no key, an unknown object.
    status, ctype, text = fetch(base, "GET", "/admin/v1/tiers")
    assert status == 401
    doc.check_response("/admin/v1/tiers", "GET", status, ctype, text)
    admin("GET", "/tenants/nobody", template="/tenants/{id}", expect=404)
    admin("DELETE", f"/keys/{key['id']}", template="/keys/{id}", expect=200)
    admin("DELETE", "/tenants/acme", template="/tenants/{id}", expect=200)
    admin("DELETE", "/tiers/gold", template="/tiers/{id}", expect=409)
