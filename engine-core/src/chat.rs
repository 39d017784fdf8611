//! Chat templates: the Jinja templates that models ship in `tokenizer.chat_template` to turn a
//! conversation into prompt text.
//!
//! Rendering follows Hugging Face's `apply_chat_template`: `trim_blocks` and `lstrip_blocks` on,
//! loop controls (`break`/`continue`), `raise_exception(msg)`, a Python-compatible `tojson`,
//! Python string and dict methods (`.strip()`, `.startswith()`, `.split()`, `.items()`, ...), and
//! Python's spelling of `None`, `True` and `False` when printed. `strftime_now(fmt)` is defined
//! only when the caller supplies the date ([`ChatTemplate::render_at`]); this crate never reads
//! the clock.

use std::fmt;

use minijinja::value::{Kwargs, Serde};
use minijinja::{Environment, Error, ErrorKind, State, Value};

use crate::gguf::Metadata;

/// The metadata key of a model's chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// The template used when a model has none: ChatML, as llama.cpp falls back to.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

const TEMPLATE_NAME: &str = "chat_template";

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template source is not valid Jinja.
    #[error("chat template syntax error: {message}")]
    Syntax {
        /// The parser's message (with the line).
        message: String,
        /// The line, if known.
        line: Option<usize>,
    },
    /// The template called `raise_exception(message)`.
    #[error("chat template raised an exception: {message}")]
    Raised {
        /// The template's message.
        message: String,
    },
    /// Rendering failed otherwise (undefined method, type error, ...).
    #[error("chat template failed to render: {message}")]
    Render {
        /// The engine's message (with the line).
        message: String,
        /// The line, if known.
        line: Option<usize>,
    },
    /// `tokenizer.chat_template` is present but not a string.
    #[error("metadata key {CHAT_TEMPLATE_KEY:?} is not a string")]
    InvalidMetadata,
}

/// One conversation to render.
#[derive(Clone, Copy, Debug)]
pub struct ChatRequest<'a> {
    /// Messages as OpenAI-style JSON objects (`role`, `content`, and whatever else the template
    /// reads, such as `tool_calls`).
    pub messages: &'a [serde_json::Value],
    /// Whether to end with the header of an assistant turn.
    pub add_generation_prompt: bool,
    /// The model's BOS token text (empty if none).
    pub bos_token: &'a str,
    /// The model's EOS token text (empty if none).
    pub eos_token: &'a str,
    /// Tool definitions (`none` in the template when absent).
    pub tools: Option<&'a serde_json::Value>,
}

/// A calendar date and time of day, for templates that print today's date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatDateTime {
    /// Year, e.g. 2025.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
    /// Hour, 0 to 23.
    pub hour: u8,
    /// Minute, 0 to 59.
    pub minute: u8,
    /// Second, 0 to 60.
    pub second: u8,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .finish()
    }
}

/// Error source that marks an error as coming from `raise_exception`.
#[derive(Debug)]
struct RaisedException(String);

impl fmt::Display for RaisedException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

impl ChatTemplate {
    /// Compiles a template.
    pub fn new(source: &str) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| ChatTemplateError::Syntax {
                message: e.to_string(),
                line: None,
            })?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| ChatTemplateError::Syntax {
                line: e.line(),
                message: describe(&e),
            })?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
        })
    }

    /// The model's template (`tokenizer.chat_template`), or ChatML when it has none.
    pub fn from_metadata(meta: &Metadata) -> Result<ChatTemplate, ChatTemplateError> {
        match meta.get(CHAT_TEMPLATE_KEY) {
            None => ChatTemplate::new(CHATML_TEMPLATE),
            Some(v) => ChatTemplate::new(v.as_str().ok_or(ChatTemplateError::InvalidMetadata)?),
        }
    }

    /// Renders a conversation. `strftime_now` is undefined (templates that test for it fall back
    /// to their own default date).
    pub fn render(&self, req: &ChatRequest<'_>) -> Result<String, ChatTemplateError> {
        self.render_at(req, None)
    }

    /// Renders a conversation; with `now`, templates can call `strftime_now(format)` to print
    /// that date (C `strftime` directives `%Y %y %m %d %e %B %b %h %A %a %H %I %M %S %p %j %%`).
    pub fn render_at(
        &self,
        req: &ChatRequest<'_>,
        now: Option<ChatDateTime>,
    ) -> Result<String, ChatTemplateError> {
        let tools = match req.tools {
            Some(t) => Value::from(Serde(t)),
            None => Value::from(()),
        };
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from(Serde(req.messages))),
            (
                "add_generation_prompt",
                Value::from(req.add_generation_prompt),
            ),
            ("bos_token", Value::from(req.bos_token)),
            ("eos_token", Value::from(req.eos_token)),
            ("tools", tools),
        ];
        if let Some(now) = now {
            ctx.push((
                "strftime_now",
                Value::from_function(move |fmt: &str| strftime(&now, fmt)),
            ));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| render_error(&e))?;
        template
            .render(Value::from_pairs(ctx))
            .map_err(|e| render_error(&e))
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The error's message with its line.
fn describe(e: &Error) -> String {
    match e.line() {
        Some(line) => format!("{e} (line {line})"),
        None => e.to_string(),
    }
}

fn render_error(e: &Error) -> ChatTemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(raised) = s.downcast_ref::<RaisedException>() {
            return ChatTemplateError::Raised {
                message: raised.0.clone(),
            };
        }
        source = s.source();
    }
    ChatTemplateError::Render {
        line: e.line(),
        message: describe(e),
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(
        Error::new(ErrorKind::InvalidOperation, "raise_exception called")
            .with_source(RaisedException(message)),
    )
}

/// Prints `none`, `true` and `false` as Python does.
fn python_formatter(
    out: &mut minijinja::Output,
    state: &mut State,
    value: &Value,
) -> Result<(), Error> {
    if value.is_none() {
        return out.write_str("None").map_err(Error::from);
    }
    if value.kind() == minijinja::value::ValueKind::Bool {
        let text = if value.is_true() { "True" } else { "False" };
        return out.write_str(text).map_err(Error::from);
    }
    minijinja::escape_formatter(out, state, value)
}

/// `tojson` as Hugging Face defines it: Python's `json.dumps` with `ensure_ascii=False` by
/// default, `", "`/`": "` separators (`","` between items when indenting), key order kept.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;

    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                let n = i64::try_from(v.clone()).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson indent must be int or str",
                    )
                })?;
                Some(" ".repeat(usize::try_from(n).unwrap_or(0).min(64)))
            }
        },
    };
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson separators must be a pair",
            ));
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let value = if sort_keys.unwrap_or(false) {
        sorted(value)
    } else {
        value.clone()
    };
    let formatter = pyjson::PyFormatter::new(
        indent.as_deref(),
        &item_sep,
        &key_sep,
        ensure_ascii.unwrap_or(false),
    );
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&value, &mut ser).map_err(|e| {
        Error::new(ErrorKind::InvalidOperation, "tojson could not serialize").with_source(e)
    })?;
    let text = String::from_utf8(out)
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "tojson produced invalid UTF-8"))?;
    Ok(Value::from_safe_string(text))
}

/// A copy of `value` whose maps list their keys in sorted order.
fn sorted(value: &Value) -> Value {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::Map => {
            let Ok(keys) = value.try_iter() else {
                return value.clone();
            };
            let mut pairs: Vec<(Value, Value)> = keys
                .map(|k| {
                    let v = value.get_item(&k).unwrap_or_default();
                    (k, sorted(&v))
                })
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::from_pairs(pairs)
        }
        ValueKind::Seq => match value.try_iter() {
            Ok(items) => items.map(|v| sorted(&v)).collect(),
            Err(_) => value.clone(),
        },
        _ => value.clone(),
    }
}

/// `strftime` for the directives chat templates use.
fn strftime(t: &ChatDateTime, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let month = MONTHS[usize::from(t.month.clamp(1, 12) - 1)];
    let weekday = DAYS[weekday(t.year, t.month, t.day)];
    let hour12 = match t.hour % 12 {
        0 => 12,
        h => h,
    };
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&t.year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", t.year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{:02}", t.month)),
            Some('d') => out.push_str(&format!("{:02}", t.day)),
            Some('e') => out.push_str(&format!("{:2}", t.day)),
            Some('B') => out.push_str(month),
            Some('b') | Some('h') => out.push_str(&month[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", t.hour)),
            Some('I') => out.push_str(&format!("{hour12:02}")),
            Some('M') => out.push_str(&format!("{:02}", t.minute)),
            Some('S') => out.push_str(&format!("{:02}", t.second)),
            Some('p') => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{:03}", day_of_year(t.year, t.month, t.day))),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn is_leap(year: i32) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

fn day_of_year(year: i32, month: u8, day: u8) -> u32 {
    const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let m = usize::from(month.clamp(1, 12) - 1);
    let leap = u32::from(m >= 2 && is_leap(year));
    CUMULATIVE[m] + u32::from(day) + leap
}

/// Day of the week, 0 = Sunday (Sakamoto's method).
fn weekday(year: i32, month: u8, day: u8) -> usize {
    const OFFSETS: [i64; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let m = usize::from(month.clamp(1, 12) - 1);
    let y = i64::from(year) - i64::from(m < 2);
    let w =
        y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400) + OFFSETS[m] + i64::from(day);
    w.rem_euclid(7) as usize
}

/// A `serde_json` formatter that writes what Python's `json.dumps` writes.
mod pyjson {
    use std::io::{self, Write};

    pub(super) struct PyFormatter<'a> {
        indent: Option<&'a str>,
        item_sep: &'a str,
        key_sep: &'a str,
        ensure_ascii: bool,
        level: usize,
        has_value: bool,
    }

    impl<'a> PyFormatter<'a> {
        pub(super) fn new(
            indent: Option<&'a str>,
            item_sep: &'a str,
            key_sep: &'a str,
            ensure_ascii: bool,
        ) -> Self {
            PyFormatter {
                indent,
                item_sep,
                key_sep,
                ensure_ascii,
                level: 0,
                has_value: false,
            }
        }

        fn newline<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
            if let Some(indent) = self.indent {
                w.write_all(b"\n")?;
                for _ in 0..self.level {
                    w.write_all(indent.as_bytes())?;
                }
            }
            Ok(())
        }

        fn open<W: ?Sized + Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
            self.level += 1;
            self.has_value = false;
            w.write_all(c)
        }

        fn close<W: ?Sized + Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
            self.level -= 1;
            if self.has_value {
                self.newline(w)?;
            }
            self.has_value = true;
            w.write_all(c)
        }

        fn item<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
            if !first {
                w.write_all(self.item_sep.as_bytes())?;
            }
            self.newline(w)
        }
    }

    impl serde_json::ser::Formatter for PyFormatter<'_> {
        fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.open(w, b"[")
        }
        fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.close(w, b"]")
        }
        fn begin_array_value<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            self.item(w, first)
        }
        fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
            self.has_value = true;
            Ok(())
        }
        fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.open(w, b"{")
        }
        fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.close(w, b"}")
        }
        fn begin_object_key<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            self.item(w, first)
        }
        fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            w.write_all(self.key_sep.as_bytes())
        }
        fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
            self.has_value = true;
            Ok(())
        }
        fn write_string_fragment<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            fragment: &str,
        ) -> io::Result<()> {
            if !self.ensure_ascii {
                return w.write_all(fragment.as_bytes());
            }
            let mut units = [0u16; 2];
            for c in fragment.chars() {
                if c.is_ascii() {
                    w.write_all(&[c as u8])?;
                } else {
                    for u in c.encode_utf16(&mut units) {
                        write!(w, "\\u{u:04x}")?;
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_and_day_of_year() {
        // 26 Jul 2024 was a Friday; 1 Jan 2000 a Saturday; 29 Feb 2024 a Thursday.
        assert_eq!(weekday(2024, 7, 26), 5);
        assert_eq!(weekday(2000, 1, 1), 6);
        assert_eq!(weekday(2024, 2, 29), 4);
        assert_eq!(day_of_year(2024, 3, 1), 61);
        assert_eq!(day_of_year(2023, 3, 1), 60);
        assert_eq!(day_of_year(2023, 12, 31), 365);
    }

    #[test]
    fn strftime_directives() {
        let t = ChatDateTime {
            year: 2024,
            month: 7,
            day: 6,
            hour: 15,
            minute: 4,
            second: 9,
        };
        assert_eq!(strftime(&t, "%d %b %Y"), "06 Jul 2024");
        assert_eq!(strftime(&t, "%B %e, %Y"), "July  6, 2024");
        assert_eq!(
            strftime(&t, "%A %a %H:%M:%S %I%p %j %y %% %Q"),
            "Saturday Sat 15:04:09 03PM 188 24 % %Q"
        );
    }
}
