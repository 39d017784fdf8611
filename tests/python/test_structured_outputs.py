"""Structured outputs through the official `openai` Python SDK against `tandem serve`: every answer
to `response_format` with a JSON schema parses and validates against it (a JSON-schema validator
over many schemas: nested objects, arrays, enums, numbers with bounds, required and optional
fields, `additionalProperties: false`), greedy and sampled, whole and streamed; `json_object`;
the SDK's own `parse` with a Pydantic model; vLLM's `guided_choice`, `guided_regex`,
`guided_grammar` and `guided_json`; and a schema the engine cannot use is a 400 naming it."""

import json
import re

import jsonschema
import openai
import pydantic
import pytest

from conftest import MODEL_ID

NAME = {"type": "string", "maxLength": 24}

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "enums_and_booleans": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "bright": {"type": "boolean"},
            "mood": {"type": "string", "enum": ["calm", "wild"]},
        },
        "required": ["color", "bright", "mood"],
        "additionalProperties": False,
    },
    "bounded_numbers": {
        "type": "object",
        "properties": {
            "temperature": {"type": "number", "minimum": -40, "maximum": 50},
            "humidity": {"type": "integer", "minimum": 0, "maximum": 100},
            "wind": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 200},
        },
        "required": ["temperature", "humidity", "wind"],
        "additionalProperties": False,
    },
    "array_of_objects": {
        "type": "object",
        "properties": {
            "books": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {"title": NAME, "year": {"type": "integer", "minimum": 1400, "maximum": 2030}},
                    "required": ["title", "year"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["books"],
        "additionalProperties": False,
    },
    "nested_with_optional": {
        "type": "object",
        "properties": {
            "city": NAME,
            "address": {
                "type": "object",
                "properties": {"street": NAME, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["street", "zip"],
                "additionalProperties": False,
            },
            "nickname": NAME,
        },
        "required": ["city", "address"],
        "additionalProperties": False,
    },
    "array_of_enums": {
        "type": "array",
        "items": {"enum": ["apple", "banana", "cherry"]},
        "minItems": 2,
        "maxItems": 4,
    },
    "any_of_and_null": {
        "type": "object",
        "properties": {
            "id": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 9999}, {"type": "string", "maxLength": 8}]},
            "parent": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
        },
        "required": ["id", "parent"],
        "additionalProperties": False,
    },
    "refs_and_const": {
        "type": "object",
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9}, "y": {"type": "integer", "minimum": -9, "maximum": 9}}, "required": ["x", "y"], "additionalProperties": False}},
        "properties": {"kind": {"const": "segment"}, "from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
        "required": ["kind", "from", "to"],
        "additionalProperties": False,
    },
}


def schema_format(name, schema):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def ask(name):
    return [{"role": "user", "content": f"Reply with a JSON example of a {name.replace('_', ' ')}."}]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_answers_validate_against_their_schema(client, name):
    schema = SCHEMAS[name]
    r = client.chat.completions.create(
        model=MODEL_ID, messages=ask(name), response_format=schema_format(name, schema),
        n=3, temperature=0.8, seed=11, max_tokens=300,
    )
    greedy = client.chat.completions.create(
        model=MODEL_ID, messages=ask(name), response_format=schema_format(name, schema), temperature=0, max_tokens=300,
    )
    for choice in [*r.choices, *greedy.choices]:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_streamed_json_schema_and_json_object(client):
    schema = SCHEMAS["person"]
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=ask("person"), response_format=schema_format("person", schema), temperature=0,
        max_tokens=200, stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), schema)
    r = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=200,
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    # The legacy completions endpoint takes it too (as vLLM's does).
    c = client.completions.create(
        model=MODEL_ID, prompt="A person, as JSON: ", max_tokens=200, temperature=0,
        extra_body={"response_format": schema_format("person", schema)},
    )
    jsonschema.validate(json.loads(c.choices[0].text), schema)


class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    species: str = pydantic.Field(pattern="^(cat|dog|fish)$")
    legs: int = pydantic.Field(ge=0, le=4)


def test_the_sdk_parses_into_a_pydantic_model(client):
    r = client.chat.completions.parse(
        model=MODEL_ID, messages=[{"role": "user", "content": "Describe a pet."}], response_format=Pet,
        temperature=0, max_tokens=200,
    )
    pet = r.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.species in ("cat", "dog", "fish") and 0 <= pet.legs <= 4


def test_vllm_guided_fields(client):
    def chat(question, **extra):
        r = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=60,
            extra_body=extra,
        )
        return r.choices[0].message.content

    assert chat("Is the sky blue?", guided_choice=["yes", "no", "maybe"]) in ("yes", "no", "maybe")
    assert re.fullmatch(r"\d{3}-\d{4}", chat("Give a phone number.", guided_regex=r"\d{3}-\d{4}"))
    lark = 'start: "Answer: " ANSWER "."\nANSWER: "yes" | "no"\n'
    assert re.fullmatch(r"Answer: (yes|no)\.", chat("Is water wet?", guided_grammar=lark))
    out = chat("A person as JSON.", guided_json=SCHEMAS["person"])
    jsonschema.validate(json.loads(out), SCHEMAS["person"])


def test_unusable_schemas_are_bad_requests_that_name_the_problem(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL_ID, messages=ask("thing"), max_tokens=8,
            response_format=schema_format("x", {"type": "object", "properties": {"a": {"type": "frobnicate"}}}),
        )
    assert e.value.body["param"] == "response_format"
    assert "frobnicate" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=ask("thing"), max_tokens=8, extra_body={"guided_regex": "(open"})
    assert e.value.body["param"] == "guided_regex"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL_ID, messages=ask("thing"), max_tokens=8, response_format={"type": "json_object"},
            extra_body={"guided_choice": ["a"]},
        )
    assert e.value.body["param"] == "guided_choice"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=ask("thing"), max_tokens=8, response_format={"type": "yaml"})
    assert e.value.body["param"] == "response_format"
