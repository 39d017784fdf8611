"""Tool calling through the official `openai` Python SDK against `tandem serve`: `tools` rendered
for the default model (its template has no tools, so they are described in the Hermes format),
`tool_choice` `required` and a named function constraining the call so that its arguments always
parse and follow the function's schema, `parallel_tool_calls`, streamed tool-call deltas,
`finish_reason: "tool_calls"`, and a round trip: the call, the tool's result, the final answer."""

import json

import jsonschema
import openai
import pytest

from conftest import MODEL_ID

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 32},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 32}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def schema_of(name):
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def check_call(call):
    assert call.type == "function" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, schema_of(call.function.name))
    return args


def test_required_and_named_calls_follow_their_schemas(client):
    r = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120,
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.content is None
    assert len(c.message.tool_calls) >= 1
    for call in c.message.tool_calls:
        check_call(call)

    named = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False, temperature=0.8, seed=3, n=3, max_tokens=120,
    )
    for choice in named.choices:
        assert choice.finish_reason == "tool_calls"
        assert [t.function.name for t in choice.message.tool_calls] == ["get_time"]
        check_call(choice.message.tool_calls[0])


def test_streamed_tool_call_deltas(client):
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=120,
        stream=True,
    )
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        for t in d.tool_calls or []:
            entry = calls.setdefault(t.index, {"name": "", "arguments": "", "id": None})
            entry["id"] = entry["id"] or t.id
            entry["name"] += t.function.name or ""
            entry["arguments"] += t.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls and all(c["name"] == "get_weather" and c["id"] for c in calls.values())
    for c in calls.values():
        jsonschema.validate(json.loads(c["arguments"]), schema_of("get_weather"))


def test_a_round_trip_call_result_answer(client):
    first = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
        temperature=0, max_tokens=120,
    )
    msg = first.choices[0].message
    assert len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    args = check_call(call)
    result = {"get_weather": {"city": args.get("city"), "temperature": 18, "sky": "sunny"},
              "get_time": {"time": "14:05"}}[call.function.name]
    history = ASK + [
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
    ]
    final = client.chat.completions.create(model=MODEL_ID, messages=history, tools=TOOLS, temperature=0, max_tokens=60)
    answer = final.choices[0]
    assert answer.message.content
    assert answer.finish_reason in ("stop", "length", "tool_calls")
    # tool_choice none: plain text, no calls parsed.
    plain = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=30)
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content


def test_bad_tools_are_bad_requests(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}, max_tokens=8,
        )
    assert e.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=[{"type": "function", "function": {}}], max_tokens=8)
    assert e.value.body["param"] == "tools[0]"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}, max_tokens=8,
        )
    assert e.value.body["param"] == "tool_choice"
