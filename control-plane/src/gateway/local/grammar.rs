//! The structured-output fields of a request (OpenAI's `response_format`, vLLM's `guided_*`)
//! as the engine's grammar.

use engine_core::constraint::Grammar;

use crate::errors::ApiError;
use crate::openai::SamplingFields;

/// The grammar the request asks for, if any; a malformed field, or more than one, is a 400
/// naming it.
pub fn grammar_of(f: &SamplingFields) -> Result<Option<Grammar>, ApiError> {
    let mut found: Vec<(&str, Grammar)> = Vec::new();
    if let Some(rf) = &f.response_format
        && let Some(g) = response_format(rf)?
    {
        found.push(("response_format", g));
    }
    if let Some(schema) = &f.guided_json {
        found.push((
            "guided_json",
            Grammar::JsonSchema(schema_value(schema, "guided_json")?),
        ));
    }
    if let Some(rx) = &f.guided_regex {
        found.push(("guided_regex", Grammar::Regex(rx.clone())));
    }
    if let Some(choices) = &f.guided_choice {
        if choices.is_empty() {
            return Err(ApiError::bad_param(
                "guided_choice",
                "guided_choice needs at least one choice.",
            ));
        }
        found.push(("guided_choice", Grammar::Choice(choices.clone())));
    }
    if let Some(lark) = &f.guided_grammar {
        found.push(("guided_grammar", Grammar::Lark(lark.clone())));
    }
    match found.len() {
        0 | 1 => Ok(found.pop().map(|(_, g)| g)),
        _ => {
            let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
            Err(ApiError::bad_param(
                names[1],
                format!(
                    "Only one kind of structured output per request; got {}.",
                    names.join(" and ")
                ),
            ))
        }
    }
}

/// The field that carries the grammar, for error messages.
pub fn grammar_param(f: &SamplingFields) -> &'static str {
    if f.guided_json.is_some() {
        "guided_json"
    } else if f.guided_regex.is_some() {
        "guided_regex"
    } else if f.guided_choice.is_some() {
        "guided_choice"
    } else if f.guided_grammar.is_some() {
        "guided_grammar"
    } else {
        "response_format"
    }
}

fn response_format(rf: &serde_json::Value) -> Result<Option<Grammar>, ApiError> {
    let bad = |m: String| ApiError::bad_param("response_format", m);
    match rf.get("type").and_then(|t| t.as_str()) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Grammar::json_object())),
        Some("json_schema") => {
            let js = rf.get("json_schema").ok_or_else(|| {
                bad("response_format of type json_schema needs a json_schema object.".into())
            })?;
            let schema = js
                .get("schema")
                .ok_or_else(|| bad("response_format.json_schema needs a schema.".into()))?;
            Ok(Some(Grammar::JsonSchema(schema_value(
                schema,
                "response_format",
            )?)))
        }
        Some(other) => Err(bad(format!(
            "response_format type must be text, json_object or json_schema, got {other:?}."
        ))),
        None => Err(bad("response_format needs a type.".into())),
    }
}

/// A schema given as an object, or as a string holding one (vLLM accepts both).
fn schema_value(v: &serde_json::Value, param: &str) -> Result<serde_json::Value, ApiError> {
    let schema = match v {
        serde_json::Value::String(s) => serde_json::from_str(s).map_err(|e| {
            ApiError::bad_param(param, format!("The schema is not valid JSON: {e}."))
        })?,
        other => other.clone(),
    };
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(ApiError::bad_param(
            param,
            "A JSON schema must be an object (or true/false).",
        ));
    }
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: serde_json::Value) -> SamplingFields {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn each_field_becomes_its_grammar() {
        let g = |j| grammar_of(&fields(j));
        assert_eq!(g(serde_json::json!({})).unwrap(), None);
        assert_eq!(
            g(serde_json::json!({"response_format": {"type": "text"}})).unwrap(),
            None
        );
        assert_eq!(
            g(serde_json::json!({"response_format": {"type": "json_object"}})).unwrap(),
            Some(Grammar::json_object())
        );
        let schema =
            serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            g(
                serde_json::json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": schema.clone(), "strict": true}}})
            )
            .unwrap(),
            Some(Grammar::JsonSchema(schema.clone()))
        );
        assert_eq!(
            g(serde_json::json!({"guided_json": schema.to_string()})).unwrap(),
            Some(Grammar::JsonSchema(schema))
        );
        assert_eq!(
            g(serde_json::json!({"guided_choice": ["a", "b"]})).unwrap(),
            Some(Grammar::Choice(vec!["a".into(), "b".into()]))
        );
        assert!(matches!(
            g(serde_json::json!({"guided_regex": "[0-9]+"})).unwrap(),
            Some(Grammar::Regex(_))
        ));
        assert!(matches!(
            g(serde_json::json!({"guided_grammar": "start: \"x\""})).unwrap(),
            Some(Grammar::Lark(_))
        ));
    }

    #[test]
    fn malformed_or_several_are_refused_by_name() {
        for (j, param) in [
            (
                serde_json::json!({"response_format": {"type": "yaml"}}),
                "response_format",
            ),
            (
                serde_json::json!({"response_format": {"type": "json_schema"}}),
                "response_format",
            ),
            (
                serde_json::json!({"guided_json": "{not json"}),
                "guided_json",
            ),
            (serde_json::json!({"guided_json": 3}), "guided_json"),
            (serde_json::json!({"guided_choice": []}), "guided_choice"),
            (
                serde_json::json!({"guided_regex": "a", "guided_choice": ["a"]}),
                "guided_choice",
            ),
        ] {
            let e = grammar_of(&fields(j.clone())).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{j}");
        }
    }
}
