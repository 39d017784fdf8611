"""Engine features through the official `openai` Python SDK: automatic prefix caching (a shared
system prompt found in the cache, vLLM's counters, unchanged answers), `n` choices of one prompt
computed once, fill-in-the-middle's typed refusal on a model without FIM markers (the
default model has none), and embeddings of texts, lists and token ids in both encodings."""

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


def test_n_choices_of_one_prompt(client, server):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a new reading club."}]
    one = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=10, temperature=0.9, seed=5)
    hits = metric(server, "tandem_prefix_cache_hits_total")
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, n=3, max_tokens=10, temperature=0.9, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    # The prompt is counted once, and computed once: the other choices take its blocks.
    assert r.usage.prompt_tokens == one.usage.prompt_tokens
    assert metric(server, "tandem_prefix_cache_hits_total") - hits >= 2 * (one.usage.prompt_tokens // 16 - 1) * 16
    # Choice i samples with seed + i: the first is the single request's answer.
    assert r.choices[0].message.content == one.choices[0].message.content
    assert len({c.message.content for c in r.choices}) > 1
    again = client.chat.completions.create(model=MODEL_ID, messages=messages, n=3, max_tokens=10, temperature=0.9, seed=5)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]

    # Streamed: every choice's deltas under its index, each with its own finish reason.
    chunks = list(client.chat.completions.create(
        model=MODEL_ID, messages=messages, n=2, max_tokens=6, temperature=0.9, seed=5, stream=True,
    ))
    texts, finishes = {}, {}
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert sorted(finishes) == [0, 1]
    assert texts[0] == r.choices[0].message.content[: len(texts[0])]

    # Completions: choices ordered prompt by prompt.
    c = client.completions.create(model=MODEL_ID, prompt=["The sky is", "Water is"], n=2, max_tokens=3, temperature=0)
    assert [x.index for x in c.choices] == [0, 1, 2, 3]
    assert c.choices[0].text == c.choices[1].text and c.choices[2].text == c.choices[3].text


def test_logprobs_with_n(client):
    r = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Say hi."}], n=2, max_tokens=4,
        temperature=0, logprobs=True, top_logprobs=2,
    )
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        assert c.logprobs.content and all(len(t.top_logprobs) == 2 for t in c.logprobs.content)
    # Greedy choices of one prompt are the same, log-probabilities included.
    assert [t.token for t in r.choices[0].logprobs.content] == [t.token for t in r.choices[1].logprobs.content]
    c = client.completions.create(model=MODEL_ID, prompt="The sky is", n=2, max_tokens=3, temperature=0, logprobs=1)
    assert all(len(x.logprobs.tokens) == len(x.logprobs.token_logprobs) > 0 for x in c.choices)


def unit(v):
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def cosine(a, b):
    return sum(x * y for x, y in zip(unit(a), unit(b)))


def test_embeddings_of_texts_lists_and_token_ids(client):
    one = client.embeddings.create(model=MODEL_ID, input="The library opens at nine.")
    assert one.object == "list" and one.model == MODEL_ID
    v = one.data[0].embedding
    assert len(v) == 576
    assert abs(sum(x * x for x in v) - 1.0) < 1e-4
    assert one.usage.prompt_tokens > 0 and one.usage.total_tokens == one.usage.prompt_tokens

    texts = ["The library opens at nine.", "Quarterly revenue grew by five percent.", "x"]
    many = client.embeddings.create(model=MODEL_ID, input=texts)
    assert [d.index for d in many.data] == [0, 1, 2]
    # Batched with other inputs, an input embeds as it does alone.
    assert cosine(many.data[0].embedding, v) > 0.99999
    assert cosine(many.data[0].embedding, many.data[1].embedding) < 0.999
    assert many.usage.prompt_tokens > one.usage.prompt_tokens

    # The SDK asks for base64 when numpy is there and decodes it; both encodings are the same floats.
    import base64
    import struct

    raw = client.embeddings.with_raw_response.create(model=MODEL_ID, input="x", encoding_format="base64").http_response.json()
    b = raw["data"][0]["embedding"]
    floats = list(struct.unpack("<576f", base64.b64decode(b)))
    assert max(abs(x - y) for x, y in zip(floats, many.data[2].embedding)) < 1e-6

    ids = client.embeddings.create(model=MODEL_ID, input=[[1, 9690, 198], [504]])
    assert len(ids.data) == 2 and ids.usage.prompt_tokens == 4
    same = client.embeddings.create(model=MODEL_ID, input=[1, 9690, 198])
    assert cosine(same.data[0].embedding, ids.data[0].embedding) > 0.99999

    # Its own size is accepted; it cannot shorten them.
    assert len(client.embeddings.create(model=MODEL_ID, input="x", dimensions=576).data[0].embedding) == 576
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL_ID, input="x", dimensions=64)
    assert e.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL_ID, input=[49152])
    assert e.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL_ID, input="word " * 5000)
    assert e.value.body["code"] == "context_length_exceeded"
