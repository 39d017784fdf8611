//! Merging streamed delta fields into one message, as the OpenAI SDKs do: text is concatenated,
//! `tool_calls` pieces are merged by their `index` (their `function.arguments` concatenated),
//! other strings are concatenated and other values replaced.

use serde_json::Value;

use crate::openai::Extra;

/// Merges one delta's extra fields into the accumulated ones.
pub fn merge_extra(acc: &mut Extra, piece: Extra) {
    for (key, value) in piece {
        if key == "tool_calls"
            && let Value::Array(calls) = value
        {
            let list = acc.entry(key).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                for call in calls {
                    merge_call(list, call);
                }
            }
            continue;
        }
        match (acc.get_mut(&key), value) {
            (Some(Value::String(old)), Value::String(new)) => old.push_str(&new),
            (_, Value::Null) => {
                acc.entry(key).or_insert(Value::Null);
            }
            (_, v) => {
                acc.insert(key, v);
            }
        }
    }
}

/// Merges one tool-call piece into the list, by `index` (or appends it).
fn merge_call(list: &mut Vec<Value>, call: Value) {
    let index = call.get("index").and_then(Value::as_u64);
    let existing = index.and_then(|i| {
        list.iter_mut()
            .find(|c| c.get("index").and_then(Value::as_u64) == Some(i))
    });
    let Some(existing) = existing else {
        list.push(call);
        return;
    };
    let (Value::Object(dst), Value::Object(src)) = (existing, call) else {
        return;
    };
    for (k, v) in src {
        match (k.as_str(), dst.get_mut(&k), v) {
            ("function", Some(Value::Object(f)), Value::Object(g)) => {
                for (fk, fv) in g {
                    match (f.get_mut(&fk), fv) {
                        (Some(Value::String(a)), Value::String(b)) => a.push_str(&b),
                        (_, fv) => {
                            f.insert(fk, fv);
                        }
                    }
                }
            }
            (_, _, v) => {
                dst.insert(k, v);
            }
        }
    }
}

/// Drops the `index` of merged tool calls (a whole message's calls carry none).
pub fn finish_message_extra(extra: &mut Extra) {
    if let Some(Value::Array(calls)) = extra.get_mut("tool_calls") {
        for c in calls {
            if let Value::Object(o) = c {
                o.remove("index");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_call_pieces_merge_by_index() {
        let mut acc = Extra::new();
        let pieces = [
            json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "get", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
            json!({"tool_calls": [{"index": 1, "id": "c2", "type": "function", "function": {"name": "put", "arguments": "{}"}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}], "reasoning_content": "x"}),
            json!({"reasoning_content": "y"}),
        ];
        for p in pieces {
            let Value::Object(m) = p else { unreachable!() };
            merge_extra(&mut acc, m);
        }
        finish_message_extra(&mut acc);
        assert_eq!(
            Value::Object(acc),
            json!({
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{\"a\":1}"}},
                    {"id": "c2", "type": "function", "function": {"name": "put", "arguments": "{}"}}
                ],
                "reasoning_content": "xy"
            })
        );
    }
}
