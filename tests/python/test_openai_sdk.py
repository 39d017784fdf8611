"""The official `openai` Python SDK against `tandem serve`: completions streamed and not, usage,
stop strings, lengths, seeds, logprobs, prompt scoring, models, and errors as typed exceptions."""

import openai
import pytest

from conftest import MODEL_ID, Server

ASK = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]


def test_chat_completion(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=24, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL_ID
    assert r.system_fingerprint.startswith("fp_")
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and "<|im_" not in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 24


def test_streaming_with_usage_matches_the_whole_answer(client):
    whole = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_strings_and_length(client):
    plain = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=40, temperature=0)
    text = plain.choices[0].message.content
    assert "5" in text
    stopped = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=40, temperature=0, stop=["5", "XYZ"])
    assert stopped.choices[0].message.content == text[: text.index("5")]
    assert stopped.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_completion_tokens=3, temperature=0)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 3


def test_seed_reproducibility(client):
    def sample(seed):
        r = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Tell me a story about a dragon."}],
            max_tokens=32, temperature=1.0, top_p=0.95, seed=seed,
        )
        return r.choices[0].message.content

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)


def test_logprobs(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    assert "".join(bytes(t.bytes).decode("utf-8", "replace") for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token  # greedy picks the most likely
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob


def test_completions_score_a_prompt_like_lm_eval(client):
    r = client.completions.create(model=MODEL_ID, prompt="The capital of France is Paris", max_tokens=0, echo=True, logprobs=1, temperature=0)
    choice = r.choices[0]
    assert r.object == "text_completion"
    assert choice.text == "The capital of France is Paris"
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    for token, top in zip(lp.tokens[1:], lp.top_logprobs[1:]):
        assert token in top
    assert r.usage.completion_tokens == 0
    # Token-id prompts and several prompts at once.
    ids = client.completions.create(model=MODEL_ID, prompt=[[504, 3458], [504]], max_tokens=3, temperature=0)
    assert [c.index for c in ids.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in ids.choices)
    # Streaming completions.
    text = "".join(c.choices[0].text for c in client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True) if c.choices)
    whole = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert text == whole.choices[0].text


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL_ID]
    m = client.models.retrieve(MODEL_ID)
    assert m.id == MODEL_ID and m.owned_by == "tandem"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-17")


def test_errors_are_typed(client, server):
    cases = [
        dict(messages=[]),
        dict(messages=[{"role": "wizard", "content": "x"}]),
        dict(messages=ASK, n=17),
        dict(messages=ASK, temperature=5),
        dict(messages=[{"role": "user", "content": "word " * 600}]),
        dict(messages=ASK, max_tokens=100000),
    ]
    for kwargs in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL_ID, **kwargs)
        assert e.value.status_code == 400
        assert e.value.body["message"]
        assert e.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "word " * 600}])
    assert "512" in e.value.body["message"] and e.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-17", messages=ASK)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "a" * 100_000}])
    assert e.value.status_code == 413
    # Extra fields are ignored, and the server still answers.
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=2, extra_body={"frobnicate": [1, 2], "top_k": 5})
    assert r.choices[0].message.content


def test_a_full_queue_is_a_rate_limit_error():
    busy = Server("--max-seqs", "1", "--max-waiting", "0")
    try:
        client = busy.client()
        stream = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Tell me a long story."}],
            max_tokens=1500, stream=True, extra_body={"ignore_eos": True},
        )
        next(iter(stream))
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=2)
        assert e.value.response.headers["retry-after"] == "1"
        stream.close()
    finally:
        busy.stop()
