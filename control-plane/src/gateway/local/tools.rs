//! Tool calling on a local model: the request's functions go to the chat template (as Hugging
//! Face passes `tools` to Jinja), or, for a template that does not render tools, into a system
//! message describing them in the Hermes format; the answer is parsed into `tool_calls` in the
//! format the template uses (Hermes/Qwen `<tool_call>` JSON, Llama 3.x JSON, Mistral
//! `[TOOL_CALLS]`); with `tool_choice` `required` or a named function, a grammar makes the answer
//! a call whose arguments follow the function's JSON schema.

use engine_core::constraint::Grammar;
use rand::RngExt;
use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::openai::ChatCompletionRequest;

/// How a model writes its calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Hermes, Qwen, SmolLM3).
    Hermes,
    /// A bare `{"name": ..., "parameters": {...}}` object, maybe after `<|python_tag|>`
    /// (Llama 3.1 to 3.3).
    Llama3Json,
    /// `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (Mistral).
    Mistral,
}

impl ToolFormat {
    /// The format a chat template uses, and whether it renders `tools` itself.
    pub fn of_template(source: &str) -> (ToolFormat, bool) {
        let native = source.contains("tools");
        let format = if source.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if source.contains("<|python_tag|>") || source.contains("ipython") {
            ToolFormat::Llama3Json
        } else {
            ToolFormat::Hermes
        };
        (format, native)
    }

    /// The text that opens a call, if the format has one.
    fn marker(self) -> Option<&'static str> {
        match self {
            ToolFormat::Hermes => Some("<tool_call>"),
            ToolFormat::Mistral => Some("[TOOL_CALLS]"),
            ToolFormat::Llama3Json => None,
        }
    }

    /// The key holding the arguments.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3Json => "parameters",
            _ => "arguments",
        }
    }
}

/// What `tool_choice` allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// At least one call.
    Required,
    /// A call of this function.
    Named(String),
}

/// One function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    /// Its name.
    pub name: String,
    /// The JSON schema of its arguments.
    pub parameters: Value,
}

/// The tools of one request, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSetup {
    /// The functions.
    pub functions: Vec<Function>,
    /// The `tools` array as the client sent it (for the template).
    pub tools: Value,
    /// What the answer may do.
    pub choice: ToolChoice,
    /// Several calls per answer.
    pub parallel: bool,
    /// How calls are written.
    pub format: ToolFormat,
    /// Whether the template renders the tools itself.
    pub native: bool,
}

/// A call parsed from an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    /// The function.
    pub name: String,
    /// Its arguments, as a JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// The call as an entry of a message's `tool_calls` (and of a chunk's, with `index`).
    pub fn to_json(&self, index: usize) -> Value {
        let id: String = {
            let mut rng = rand::rng();
            (0..24)
                .map(|_| {
                    let c = rng.random_range(0..62u8);
                    char::from(match c {
                        0..10 => b'0' + c,
                        10..36 => b'a' + c - 10,
                        _ => b'A' + c - 36,
                    })
                })
                .collect()
        };
        json!({"index": index, "id": format!("call_{id}"), "type": "function",
               "function": {"name": self.name, "arguments": self.arguments}})
    }
}

impl ToolSetup {
    /// The tools of `req` for a model whose chat template is `template`; `None` without tools
    /// or with `tool_choice: none`.
    pub fn of(req: &ChatCompletionRequest, template: &str) -> Result<Option<ToolSetup>, ApiError> {
        let tools = match &req.tools {
            Some(t) if !t.is_empty() => t,
            _ => {
                if req
                    .tool_choice
                    .as_ref()
                    .is_some_and(|c| c != "none" && c != "auto")
                {
                    return Err(ApiError::bad_param(
                        "tool_choice",
                        "tool_choice needs tools to choose from.",
                    ));
                }
                return Ok(None);
            }
        };
        let mut functions = Vec::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            let param = format!("tools[{i}]");
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::bad_param(
                    &param,
                    format!("{param}.type must be \"function\"."),
                ));
            }
            let f = t
                .get("function")
                .ok_or_else(|| ApiError::bad_param(&param, format!("{param} needs a function.")))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_param(&param, format!("{param}.function needs a name."))
                })?;
            let parameters = match f.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(p) if p.is_object() => p.clone(),
                Some(_) => {
                    return Err(ApiError::bad_param(
                        &param,
                        format!("{param}.function.parameters must be a JSON schema object."),
                    ));
                }
            };
            functions.push(Function {
                name: name.to_owned(),
                parameters,
            });
        }
        let choice = match &req.tool_choice {
            None => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "none" => return Ok(None),
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => {
                    return Err(ApiError::bad_param(
                        "tool_choice",
                        format!(
                            "tool_choice must be none, auto, required or a function, got {other:?}."
                        ),
                    ));
                }
            },
            Some(v) => {
                let name = v
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::bad_param(
                            "tool_choice",
                            "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                        )
                    })?;
                if !functions.iter().any(|f| f.name == name) {
                    return Err(ApiError::bad_param(
                        "tool_choice",
                        format!("tool_choice names {name:?}, which is not among the tools."),
                    ));
                }
                ToolChoice::Named(name.to_owned())
            }
        };
        let (format, native) = ToolFormat::of_template(template);
        Ok(Some(ToolSetup {
            functions,
            tools: Value::Array(tools.clone()),
            choice,
            parallel: req.parallel_tool_calls.unwrap_or(true),
            format,
            native,
        }))
    }

    /// Adapts template messages: assistant `tool_calls` get their arguments as objects (as
    /// Hugging Face templates expect); for a template without tools, calls and results become
    /// text in the Hermes format and the functions are described in the system message.
    pub fn adapt(&self, messages: &mut Vec<Value>) {
        for m in messages.iter_mut() {
            if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                for c in calls.iter_mut() {
                    if let Some(args) = c.pointer_mut("/function/arguments")
                        && let Some(parsed) = args
                            .as_str()
                            .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    {
                        *args = parsed;
                    }
                }
            }
        }
        if self.native {
            return;
        }
        for m in messages.iter_mut() {
            if m["role"] == "tool" {
                let content = m["content"].as_str().unwrap_or_default().to_owned();
                *m = json!({"role": "user",
                            "content": format!("<tool_response>\n{content}\n</tool_response>")});
            } else if let Some(Value::Array(calls)) = m.get("tool_calls").cloned() {
                let mut text = m["content"].as_str().unwrap_or_default().to_owned();
                for c in calls {
                    let call = json!({"name": c.pointer("/function/name").cloned().unwrap_or_default(),
                                      "arguments": c.pointer("/function/arguments").cloned().unwrap_or_default()});
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!("<tool_call>\n{call}\n</tool_call>"));
                }
                *m = json!({"role": "assistant", "content": text});
            }
        }
        let intro = self.instructions();
        match messages.first_mut() {
            Some(first) if first["role"] == "system" => {
                let content = first["content"].as_str().unwrap_or_default();
                first["content"] = Value::from(format!("{content}\n\n{intro}"));
            }
            _ => messages.insert(0, json!({"role": "system", "content": intro})),
        }
    }

    /// The description of the functions for a template that does not render tools.
    fn instructions(&self) -> String {
        let mut s = String::from(
            "# Tools\n\nYou can call functions to help answer. Their signatures, one JSON object per line:\n<tools>\n",
        );
        for t in self.tools.as_array().into_iter().flatten() {
            s.push_str(&t.to_string());
            s.push('\n');
        }
        s.push_str(
            "</tools>\n\nTo call a function, answer with a JSON object holding its name and arguments inside <tool_call></tool_call> tags:\n<tool_call>\n{\"name\": \"the function\", \"arguments\": {\"argument\": \"value\"}}\n</tool_call>",
        );
        s
    }

    /// The grammar that makes the answer a call (`required`, or a named function): the
    /// function's name and arguments valid against its schema, in the model's format.
    pub fn grammar(&self) -> Option<Grammar> {
        let allowed: Vec<&Function> = match &self.choice {
            ToolChoice::Auto => return None,
            ToolChoice::Required => self.functions.iter().collect(),
            ToolChoice::Named(n) => self.functions.iter().filter(|f| &f.name == n).collect(),
        };
        let key = self.format.arguments_key();
        let one: Vec<Value> = allowed
            .iter()
            .map(|f| {
                json!({"type": "object",
                       "properties": {"name": {"const": f.name}, key: f.parameters},
                       "required": ["name", key], "additionalProperties": false})
            })
            .collect();
        let call = json!({"anyOf": one, "x-guidance": {"whitespace_flexible": false,
                          "item_separator": ", ", "key_separator": ": "}});
        let lark = match self.format {
            ToolFormat::Hermes => {
                let repeat = if self.parallel {
                    " (\"\\n\" call)*"
                } else {
                    ""
                };
                format!(
                    "start: call{repeat}\ncall: \"<tool_call>\\n\" %json {call} \"\\n</tool_call>\"\n"
                )
            }
            ToolFormat::Llama3Json => format!("start: %json {call}\n"),
            ToolFormat::Mistral => {
                let max = if self.parallel {
                    ""
                } else {
                    ", \"maxItems\": 1"
                };
                let list = format!(
                    "{{\"type\": \"array\", \"minItems\": 1{max}, \"items\": {call}, \"x-guidance\": {{\"whitespace_flexible\": false, \"item_separator\": \", \", \"key_separator\": \": \"}}}}"
                );
                format!("start: \"[TOOL_CALLS]\" %json {list}\n")
            }
        };
        Some(Grammar::Lark(lark))
    }

    /// Splits an answer into its text and its calls (of declared functions; a call that does
    /// not parse leaves the whole answer as text).
    pub fn parse(&self, text: &str) -> (String, Vec<ToolCall>) {
        let parsed = match self.format {
            ToolFormat::Hermes => self.parse_hermes(text),
            ToolFormat::Mistral => self.parse_mistral(text),
            ToolFormat::Llama3Json => self.parse_llama3(text),
        };
        match parsed {
            Some((content, calls)) if !calls.is_empty() => (content, calls),
            _ => (text.to_owned(), Vec::new()),
        }
    }

    fn call(&self, v: &Value) -> Option<ToolCall> {
        let name = v.get("name")?.as_str()?;
        if !self.functions.iter().any(|f| f.name == name) {
            return None;
        }
        let args = v
            .get(self.format.arguments_key())
            .or_else(|| v.get("arguments"))
            .or_else(|| v.get("parameters"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let arguments = match args {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Some(ToolCall {
            name: name.to_owned(),
            arguments,
        })
    }

    fn parse_hermes(&self, text: &str) -> Option<(String, Vec<ToolCall>)> {
        let mut content = String::new();
        let mut calls = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("<tool_call>") {
            content.push_str(&rest[..start]);
            let after = &rest[start + "<tool_call>".len()..];
            let (body, next) = match after.find("</tool_call>") {
                Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
                None => (after, ""),
            };
            let v: Value = serde_json::from_str(body.trim()).ok()?;
            calls.push(self.call(&v)?);
            rest = next;
        }
        content.push_str(rest);
        Some((content.trim().to_owned(), calls))
    }

    fn parse_mistral(&self, text: &str) -> Option<(String, Vec<ToolCall>)> {
        let at = text.find("[TOOL_CALLS]")?;
        let body = text[at + "[TOOL_CALLS]".len()..].trim();
        let list: Value = serde_json::from_str(body).ok()?;
        let calls = match list {
            Value::Array(items) => items.iter().map(|v| self.call(v)).collect::<Option<_>>()?,
            one => vec![self.call(&one)?],
        };
        Some((text[..at].trim().to_owned(), calls))
    }

    fn parse_llama3(&self, text: &str) -> Option<(String, Vec<ToolCall>)> {
        let body = text.trim();
        let body = body.strip_prefix("<|python_tag|>").unwrap_or(body).trim();
        if !body.starts_with('{') {
            return None;
        }
        let calls = serde_json::Deserializer::from_str(body)
            .into_iter::<Value>()
            .map(|v| v.ok().and_then(|v| self.call(&v)))
            .collect::<Option<Vec<_>>>()?;
        Some((String::new(), calls))
    }
}

/// One choice's answer while it streams: text is passed on until a call may be starting, and
/// what follows is kept until the end, when it is parsed.
#[derive(Debug, Default)]
pub struct ToolStream {
    /// Text not yet passed on (a possible start of a call, or a call).
    held: String,
    /// A call has started: everything is kept.
    capturing: bool,
    /// Text was passed on (a Llama 3 call must be the whole answer).
    passed: bool,
}

impl ToolStream {
    /// Takes newly generated text; returns what can be shown now.
    pub fn push(&mut self, setup: &ToolSetup, text: &str) -> String {
        self.held.push_str(text);
        if self.capturing {
            return String::new();
        }
        let Some(marker) = setup.format.marker() else {
            // Llama 3: an answer that starts with `{` (or the python tag) is a call.
            const TAG: &str = "<|python_tag|>";
            if self.passed {
                return std::mem::take(&mut self.held);
            }
            let t = self.held.trim_start();
            if t.starts_with('{') || t.starts_with(TAG) {
                self.capturing = true;
                return String::new();
            }
            if t.is_empty() || TAG.starts_with(t) {
                // Undecided yet.
                return String::new();
            }
            self.passed = true;
            return std::mem::take(&mut self.held);
        };
        if let Some(at) = self.held.find(marker) {
            self.capturing = true;
            let shown: String = self.held[..at].to_owned();
            self.held.drain(..at);
            self.passed |= !shown.is_empty();
            return shown;
        }
        // Keep a tail that could be the start of the marker.
        let n = self.held.len();
        let keep = (1..marker.len())
            .rev()
            .find(|&k| {
                n >= k
                    && self.held.is_char_boundary(n - k)
                    && marker.starts_with(&self.held[n - k..])
            })
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let shown: String = self.held.drain(..cut).collect();
        self.passed |= !shown.is_empty();
        shown
    }

    /// The end of the answer: the text still held (to show) and the calls it holds.
    pub fn finish(self, setup: &ToolSetup) -> (String, Vec<ToolCall>) {
        if !self.capturing {
            return (self.held, Vec::new());
        }
        // The text before the first call was shown already; text between and after the calls
        // comes now (all of it, when no call parses).
        setup.parse(&self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(format: ToolFormat, choice: ToolChoice) -> ToolSetup {
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
        ToolSetup {
            functions: vec![Function {
                name: "get_weather".into(),
                parameters: tools[0]["function"]["parameters"].clone(),
            }],
            tools,
            choice,
            parallel: true,
            format,
            native: false,
        }
    }

    #[test]
    fn each_format_parses_its_calls() {
        let h = setup(ToolFormat::Hermes, ToolChoice::Auto);
        let (content, calls) = h.parse(
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Rome\\\"}\"}</tool_call>",
        );
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
        assert_eq!(calls[1].arguments, "{\"city\": \"Rome\"}");
        // Unknown functions and broken JSON stay text.
        for t in [
            "<tool_call>{\"name\": \"nope\", \"arguments\": {}}</tool_call>",
            "<tool_call>{oops</tool_call>",
        ] {
            assert_eq!(h.parse(t), (t.to_owned(), Vec::new()));
        }
        let m = setup(ToolFormat::Mistral, ToolChoice::Auto);
        let (_, calls) = m.parse(
            "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}]",
        );
        assert_eq!(calls[0].arguments, "{\"city\":\"Oslo\"}");
        let l = setup(ToolFormat::Llama3Json, ToolChoice::Auto);
        let (_, calls) = l.parse(
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Lima\"}}",
        );
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(l.parse("Sunny.").1, Vec::new());
    }

    #[test]
    fn streams_hold_back_only_what_may_be_a_call() {
        let h = setup(ToolFormat::Hermes, ToolChoice::Auto);
        let mut s = ToolStream::default();
        let mut shown = String::new();
        for piece in [
            "Checking",
            " now <to",
            "ol_call>\n{\"name\": \"get_weather\", ",
            "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        ] {
            shown.push_str(&s.push(&h, piece));
        }
        assert_eq!(shown, "Checking now ");
        let (rest, calls) = s.finish(&h);
        assert_eq!((rest.as_str(), calls.len()), ("", 1));
        // A `<` that does not become a call is shown at the end.
        let mut s = ToolStream::default();
        assert_eq!(s.push(&h, "a <t"), "a ");
        assert_eq!(s.push(&h, "ag> b"), "<tag> b");
        assert_eq!(s.finish(&h), (String::new(), Vec::new()));
    }

    #[test]
    fn grammars_follow_the_choice_and_format() {
        assert_eq!(setup(ToolFormat::Hermes, ToolChoice::Auto).grammar(), None);
        let Some(Grammar::Lark(g)) = setup(ToolFormat::Hermes, ToolChoice::Required).grammar()
        else {
            panic!("a Lark grammar");
        };
        assert!(
            g.contains("<tool_call>") && g.contains("get_weather") && g.contains("(\"\\n\" call)*")
        );
        let Some(Grammar::Lark(g)) =
            setup(ToolFormat::Mistral, ToolChoice::Named("get_weather".into())).grammar()
        else {
            panic!("a Lark grammar");
        };
        assert!(g.starts_with("start: \"[TOOL_CALLS]\""));
    }

    #[test]
    fn fallback_templates_get_instructions_and_text_calls() {
        let h = setup(ToolFormat::Hermes, ToolChoice::Auto);
        let mut msgs = vec![
            json!({"role": "user", "content": "Weather in Paris?"}),
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
                   "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "18 C"}),
        ];
        h.adapt(&mut msgs);
        assert_eq!(msgs[0]["role"], "system");
        assert!(msgs[0]["content"].as_str().unwrap().contains("get_weather"));
        assert!(msgs[2]["content"].as_str().unwrap().contains(
            "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}"
        ));
        assert_eq!(msgs[3]["role"], "user");
        assert!(
            msgs[3]["content"]
                .as_str()
                .unwrap()
                .contains("<tool_response>\n18 C")
        );
    }
}
