"""Engine features through the official `openai` Python SDK: automatic prefix caching (a shared
system prompt found in the cache, vLLM's counters, unchanged answers) and fill-in-the-middle's
typed refusal on a model without FIM markers (the default model has none)."""

import urllib.request

import openai
import pytest

from conftest import MODEL_ID

SYSTEM = "You answer questions about a small town's public library. Keep answers short. " * 6


def metric(server, name):
    text = urllib.request.urlopen(server.base + "/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def ask(client, question):
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        max_tokens=8,
        temperature=0,
    )
    return r.choices[0].message.content


def test_a_shared_system_prompt_is_found_in_the_prefix_cache(client, server):
    hits = metric(server, "tandem_prefix_cache_hits_total")
    queries = metric(server, "tandem_prefix_cache_queries_total")
    first = ask(client, "When do you open?")
    ask(client, "Can I renew a book?")
    assert metric(server, "tandem_prefix_cache_queries_total") > queries
    # The system prompt's whole 16-token blocks (about 100 tokens) came from the cache.
    assert metric(server, "tandem_prefix_cache_hits_total") - hits >= 96
    # The first question again: served from cached blocks, the same answer.
    assert ask(client, "When do you open?") == first


def test_suffix_on_a_model_without_fim_tokens_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_ID, prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))\n", max_tokens=4)
    assert e.value.body["param"] == "suffix"
    assert "fill-in-the-middle" in e.value.body["message"]
    # An empty suffix is a plain completion.
    r = client.completions.create(model=MODEL_ID, prompt="def add(a, b):\n    ", suffix="", max_tokens=2)
    assert r.choices[0].text is not None
