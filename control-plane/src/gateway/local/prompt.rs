//! Turning an OpenAI request into engine requests for a local model: the conversation rendered
//! through the model's chat template and tokenized, or the completion prompts tokenized (or
//! checked, when given as token ids), and the sampling fields converted and checked against the
//! model.

use engine_core::chat::ChatRequest;
use engine_core::constraint::Grammar;
use engine_core::engine::Request;
use engine_core::sampler::{MAX_TOP_LOGPROBS, SamplingParams};

use super::ModelHandle;
use super::grammar::grammar_of;
use super::tools::ToolSetup;
use crate::errors::ApiError;
use crate::openai::{
    ChatCompletionRequest, ChatMessage, CompletionRequest, MessageContent, PromptInput,
    SamplingFields,
};

/// Most alternatives per token in the legacy completions API.
pub const MAX_COMPLETION_LOGPROBS: u32 = 5;
/// Most prompts in one completions request.
pub const MAX_PROMPTS: usize = 64;
/// Most stop strings.
pub const MAX_STOPS: usize = 16;
/// Most choices per prompt (`n`).
pub const MAX_N: u32 = 16;

/// Engine requests for one API request, with what rendering needs to know.
pub struct Prepared {
    /// One engine request per choice.
    pub requests: Vec<Request>,
    /// Alternatives per token when log-probabilities are wanted.
    pub top_logprobs: Option<usize>,
    /// Keep going after end-of-generation.
    pub ignore_eos: bool,
    /// Each prompt's text when the completion echoes it.
    pub echo: Option<Vec<String>>,
    /// Choices per prompt (`n`): request `i` is choice `i % n` of prompt `i / n`.
    pub n: usize,
    /// The request's tools, whose calls are parsed from the answers.
    pub tools: Option<ToolSetup>,
}

/// Converts the request's messages into what chat templates expect, checking roles and content.
pub fn template_messages(messages: &[ChatMessage]) -> Result<Vec<serde_json::Value>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_param(
            "messages",
            "messages must contain at least one message.",
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "tool",
            other => {
                return Err(ApiError::bad_param(
                    &format!("messages[{i}].role"),
                    format!(
                        "Unsupported role {other:?} in messages[{i}]: expected system, developer, user, assistant or tool."
                    ),
                ));
            }
        };
        let content = match &m.content {
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(parts)) => {
                let mut text = Vec::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push(t.as_str()),
                        (kind, _) => {
                            return Err(ApiError::bad_param(
                                &format!("messages[{i}].content[{j}]"),
                                format!(
                                    "Only text content parts are supported, got a {kind:?} part in messages[{i}]."
                                ),
                            ));
                        }
                    }
                }
                text.join("\n")
            }
            None if role == "assistant" => String::new(),
            None => {
                return Err(ApiError::bad_param(
                    &format!("messages[{i}].content"),
                    format!("messages[{i}] has no content."),
                ));
            }
        };
        let mut msg = serde_json::json!({"role": role, "content": content});
        if let Some(name) = &m.name {
            msg["name"] = serde_json::Value::from(name.as_str());
        }
        // The fields of tool calling, for templates that render them.
        for key in ["tool_calls", "tool_call_id"] {
            if let Some(v) = m.extra.get(key) {
                msg[key] = v.clone();
            }
        }
        out.push(msg);
    }
    Ok(out)
}

/// How the conversation ends in the prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The assistant's turn is opened after the messages (the usual chat request).
    NewTurn,
    /// Nothing is added after the messages.
    AsIs,
    /// The final message, an assistant's, is left open: the answer continues its text.
    ContinueFinal,
}

impl Ending {
    /// From vLLM's `add_generation_prompt` and `continue_final_message` fields.
    pub fn of(req: &ChatCompletionRequest) -> Result<Ending, ApiError> {
        let cont = req.continue_final_message.unwrap_or(false);
        match (req.add_generation_prompt, cont) {
            (Some(true), true) => Err(ApiError::bad_param(
                "continue_final_message",
                "continue_final_message and add_generation_prompt cannot both be true.",
            )),
            (_, true) => match req.messages.last() {
                Some(m) if m.role == "assistant" => Ok(Ending::ContinueFinal),
                _ => Err(ApiError::bad_param(
                    "continue_final_message",
                    "continue_final_message needs the last message to be the assistant's.",
                )),
            },
            (Some(false), false) => Ok(Ending::AsIs),
            (_, false) => Ok(Ending::NewTurn),
        }
    }
}

/// Renders a conversation through the model's chat template and tokenizes it, ending as
/// `ending` says. Continuing the final message renders it as a closed turn and cuts the text
/// right after its content (as vLLM does).
pub fn chat_prompt(
    model: &ModelHandle,
    messages: &[serde_json::Value],
    ending: Ending,
    tools: Option<&serde_json::Value>,
) -> Result<Vec<u32>, ApiError> {
    let tok = &model.tokenizer;
    let piece = |id: Option<u32>| {
        id.and_then(|id| tok.token_piece(id))
            .unwrap_or("")
            .to_owned()
    };
    let (bos, eos) = (piece(tok.bos_id()), piece(tok.eos_id()));
    let render = |messages: &[serde_json::Value], add_generation_prompt: bool| {
        model
            .template
            .render(&ChatRequest {
                messages,
                add_generation_prompt,
                bos_token: &bos,
                eos_token: &eos,
                tools,
            })
            .map_err(|e| ApiError::bad_param("messages", e.to_string()))
    };
    let text = match ending {
        Ending::NewTurn => render(messages, true)?,
        Ending::AsIs => render(messages, false)?,
        Ending::ContinueFinal => {
            let last = messages
                .last()
                .and_then(|m| m["content"].as_str())
                .unwrap_or("");
            if last.is_empty() {
                // Nothing to continue: the same as opening the assistant's turn.
                render(&messages[..messages.len().saturating_sub(1)], true)?
            } else {
                let mut text = render(messages, false)?;
                let Some(at) = text.rfind(last) else {
                    return Err(ApiError::bad_param(
                        "continue_final_message",
                        "The chat template does not keep the final message's text, so it cannot be continued.",
                    ));
                };
                text.truncate(at + last.len());
                text
            }
        }
    };
    Ok(tok.encode(&text, tok.add_bos(), true))
}

/// Prepares a chat request.
pub fn chat(model: &ModelHandle, req: &ChatCompletionRequest) -> Result<Prepared, ApiError> {
    let mut messages = template_messages(&req.messages)?;
    let tools = ToolSetup::of(req, model.template.source())?;
    if let Some(t) = &tools {
        t.adapt(&mut messages);
    }
    let top = match (req.logprobs, req.top_logprobs) {
        (Some(true), n) => Some(check_top_logprobs(n.unwrap_or(0))?),
        (_, Some(n)) if n > 0 => {
            return Err(ApiError::bad_param(
                "top_logprobs",
                "top_logprobs requires logprobs: true.",
            ));
        }
        _ => None,
    };
    let mut s = sampling(&req.sampling, top, model.vocab)?;
    if let Some(g) = tools.as_ref().and_then(ToolSetup::grammar) {
        if s.grammar.is_some() {
            return Err(ApiError::bad_param(
                "tool_choice",
                "A required or named tool_choice cannot be combined with structured output.",
            ));
        }
        s.grammar = Some(g);
    }
    let requested = req.max_completion_tokens.or(req.max_tokens);
    if requested == Some(0) {
        return Err(ApiError::bad_param(
            "max_tokens",
            "max_tokens must be at least 1.",
        ));
    }
    let native_tools = tools.as_ref().filter(|t| t.native).map(|t| &t.tools);
    let prompt = chat_prompt(model, &messages, Ending::of(req)?, native_tools)?;
    let max_tokens = max_tokens(
        requested,
        usize::MAX,
        prompt.len(),
        model.context,
        "messages",
    )?;
    let requests = s.choices(&Request {
        prompt,
        params: s.params.clone(),
        max_tokens,
        stop: s.stop.clone(),
        ignore_eos: s.ignore_eos,
        prompt_logprobs: None,
        fallback_seed: 0,
        flow: None,
        embed: None,
        grammar: s.grammar.clone(),
    });
    Ok(Prepared {
        requests,
        top_logprobs: top,
        ignore_eos: s.ignore_eos,
        echo: None,
        n: s.n,
        tools,
    })
}

/// One completion prompt: its tokens and its text.
struct Prompt {
    tokens: Vec<u32>,
    text: String,
}

fn prompts(model: &ModelHandle, input: &PromptInput) -> Result<Vec<Prompt>, ApiError> {
    let tok = &model.tokenizer;
    let from_text = |text: &String| Prompt {
        tokens: tok.encode(text, tok.add_bos(), true),
        text: text.clone(),
    };
    let from_ids = |ids: &Vec<u32>| -> Result<Prompt, ApiError> {
        check_token_ids(ids, model.vocab)?;
        Ok(Prompt {
            text: tok.decode(ids, false),
            tokens: ids.clone(),
        })
    };
    if input.count() > MAX_PROMPTS {
        return Err(ApiError::bad_param(
            "prompt",
            format!(
                "At most {MAX_PROMPTS} prompts per request, got {}.",
                input.count()
            ),
        ));
    }
    let list = match input {
        PromptInput::Text(t) => vec![from_text(t)],
        PromptInput::Texts(ts) => ts.iter().map(from_text).collect(),
        PromptInput::Tokens(ids) => vec![from_ids(ids)?],
        PromptInput::TokenLists(lists) => lists.iter().map(from_ids).collect::<Result<_, _>>()?,
    };
    if list.is_empty() {
        return Err(ApiError::bad_param("prompt", "prompt must not be empty."));
    }
    if let Some(i) = list.iter().position(|p| p.tokens.is_empty()) {
        return Err(ApiError::bad_param(
            "prompt",
            format!("prompt {i} is empty: it has no tokens."),
        ));
    }
    Ok(list)
}

/// Prepares a completions request.
pub fn completion(model: &ModelHandle, req: &CompletionRequest) -> Result<Prepared, ApiError> {
    if let Some(b) = req.best_of
        && b != 1
    {
        return Err(ApiError::bad_param(
            "best_of",
            format!("Only best_of=1 is supported, got {b}."),
        ));
    }
    let fim = req.infill.is_some() || req.suffix.as_deref().is_some_and(|s| !s.is_empty());
    let top = match req.logprobs {
        Some(n) if n > MAX_COMPLETION_LOGPROBS => {
            return Err(ApiError::bad_param(
                "logprobs",
                format!("logprobs must be in [0, {MAX_COMPLETION_LOGPROBS}], got {n}."),
            ));
        }
        Some(n) => Some(n as usize),
        None => None,
    };
    let echo = req.echo.unwrap_or(false);
    if fim && echo {
        return Err(ApiError::bad_param(
            "echo",
            "echo cannot be combined with suffix.",
        ));
    }
    let s = sampling(&req.sampling, top, model.vocab)?;
    let prompts = if fim {
        vec![fill_in_middle(model, req)?]
    } else {
        prompts(model, &req.prompt)?
    };
    // `/infill` generates until the end by default, as llama.cpp's; completions 16 tokens.
    let default_max = if req.infill.is_some() { usize::MAX } else { 16 };
    let mut requests = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let max_tokens = max_tokens(
            req.max_tokens,
            default_max,
            p.tokens.len(),
            model.context,
            "prompt",
        )?;
        requests.extend(s.choices(&Request {
            prompt: p.tokens.clone(),
            params: s.params.clone(),
            max_tokens,
            stop: s.stop.clone(),
            ignore_eos: s.ignore_eos,
            prompt_logprobs: if echo { top } else { None },
            fallback_seed: 0,
            flow: None,
            embed: None,
            grammar: s.grammar.clone(),
        }));
    }
    Ok(Prepared {
        requests,
        top_logprobs: top,
        ignore_eos: s.ignore_eos,
        echo: echo.then(|| prompts.into_iter().map(|p| p.text).collect()),
        n: s.n,
        tools: None,
    })
}

/// The fill-in-the-middle prompt of a completion with `suffix` (or of `/infill`): the prompt
/// text before the gap, the suffix after it, trimmed to leave room for the completion.
fn fill_in_middle(model: &ModelHandle, req: &CompletionRequest) -> Result<Prompt, ApiError> {
    let PromptInput::Text(prefix) = &req.prompt else {
        return Err(ApiError::bad_param(
            "prompt",
            "With suffix, the prompt must be one string.",
        ));
    };
    let suffix = req.suffix.as_deref().unwrap_or_default();
    let files = req.infill.as_ref().map_or(&[][..], |i| &i.files[..]);
    let input = engine_core::infill::Infill {
        prefix,
        suffix,
        prompt: "",
        extra: files,
    };
    // Room for the completion: what was asked, else a quarter of the context.
    let reserve = req.max_tokens.map_or(model.context / 4, |m| {
        usize::try_from(m).unwrap_or(usize::MAX)
    });
    let budget = model.context.saturating_sub(reserve).max(1);
    let tokens = engine_core::infill::prompt(&model.tokenizer, &input, budget).map_err(|e| {
        let message = match e {
            engine_core::infill::InfillError::Unsupported => format!(
                "The model {} has no fill-in-the-middle tokens; suffix and /infill need a code model that has them.",
                model.id
            ),
            other => format!("{other}; the model's context is {} tokens.", model.context),
        };
        ApiError::bad_param("suffix", message)
    })?;
    Ok(Prompt {
        text: prefix.clone(),
        tokens,
    })
}

/// Engine parameters read from the OpenAI fields shared by both endpoints.
pub struct Sampling {
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Keep going after end-of-generation.
    pub ignore_eos: bool,
    /// Choices per prompt.
    pub n: usize,
    /// The structured-output grammar, if asked for.
    pub grammar: Option<Grammar>,
}

impl Sampling {
    /// The `n` engine requests of one prompt: the same prompt (the engine computes it once and
    /// shares its blocks), each with its own random stream (a given seed plus the choice's
    /// index, so seeded choices differ from each other and repeat across calls).
    pub fn choices(&self, one: &Request) -> Vec<Request> {
        (0..self.n)
            .map(|i| {
                let mut r = one.clone();
                r.params.seed = one.params.seed.map(|s| s.wrapping_add(i as u64));
                r.fallback_seed = rand::random();
                r
            })
            .collect()
    }
}

/// Checks and converts the shared fields; `top_logprobs` is `Some` when token log-probabilities
/// are wanted.
pub fn sampling(
    f: &SamplingFields,
    top_logprobs: Option<usize>,
    vocab: usize,
) -> Result<Sampling, ApiError> {
    let n = f.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::bad_param(
            "n",
            format!("n must be between 1 and {MAX_N}, got {n}."),
        ));
    }
    let top_k = match f.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => {
            return Err(ApiError::bad_param(
                "top_k",
                format!("top_k must be -1 (off) or a positive integer, got {k}."),
            ));
        }
    };
    let mut logit_bias = Vec::new();
    for (key, &bias) in f.logit_bias.iter().flatten() {
        let id: u32 = key.parse().map_err(|_| {
            ApiError::bad_param(
                "logit_bias",
                format!("logit_bias keys must be token ids, got {key:?}."),
            )
        })?;
        if !(-100.0..=100.0).contains(&bias) {
            return Err(ApiError::bad_param(
                "logit_bias",
                format!("logit_bias values must be in [-100, 100], got {bias} for token {id}."),
            ));
        }
        logit_bias.push((id, bias));
    }
    if let Some(t) = f.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::bad_param(
            "temperature",
            format!("temperature must be in [0, 2], got {t}."),
        ));
    }
    let params = SamplingParams {
        temperature: f.temperature.unwrap_or(1.0),
        top_k,
        top_p: f.top_p.unwrap_or(1.0),
        min_p: f.min_p.unwrap_or(0.0),
        repetition_penalty: f.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: f.frequency_penalty.unwrap_or(0.0),
        presence_penalty: f.presence_penalty.unwrap_or(0.0),
        logit_bias,
        seed: f.seed.map(|s| s as u64),
        logprobs: top_logprobs.is_some(),
        top_logprobs: top_logprobs.unwrap_or(0),
        ..SamplingParams::default()
    };
    params
        .validate(vocab)
        .map_err(|e| ApiError::bad_param(e.param(), e.to_string()))?;
    let stop = f.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
    if stop.len() > MAX_STOPS {
        return Err(ApiError::bad_param(
            "stop",
            format!(
                "At most {MAX_STOPS} stop strings are supported, got {}.",
                stop.len()
            ),
        ));
    }
    Ok(Sampling {
        params,
        stop,
        ignore_eos: f.ignore_eos.unwrap_or(false),
        n: n as usize,
        grammar: grammar_of(f)?,
    })
}

/// Checks `top_logprobs` against the OpenAI limit.
pub fn check_top_logprobs(n: u32) -> Result<usize, ApiError> {
    if n as usize > MAX_TOP_LOGPROBS {
        return Err(ApiError::bad_param(
            "top_logprobs",
            format!("top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {n}."),
        ));
    }
    Ok(n as usize)
}

/// Resolves `max_tokens` against the context: an explicit value must fit beside the prompt;
/// without one, `default` (capped by what is left of the context).
pub fn max_tokens(
    requested: Option<u64>,
    default: usize,
    prompt_len: usize,
    context: usize,
    param: &str,
) -> Result<usize, ApiError> {
    let too_long = |message: String| ApiError {
        code: Some("context_length_exceeded".into()),
        ..ApiError::bad_param(param, message)
    };
    match requested {
        Some(m) => {
            let m = usize::try_from(m).unwrap_or(usize::MAX);
            let total = prompt_len.saturating_add(m);
            if total > context || (m == 0 && prompt_len > context) {
                return Err(too_long(format!(
                    "This model's maximum context length is {context} tokens. However, you requested {total} tokens ({prompt_len} in the prompt, {m} for the completion). Please reduce the length of the prompt or the completion."
                )));
            }
            Ok(m)
        }
        None => {
            if prompt_len >= context {
                return Err(too_long(format!(
                    "This model's maximum context length is {context} tokens, but the prompt has {prompt_len} tokens (and the completion needs at least 1). Please reduce the length of the prompt."
                )));
            }
            Ok(default.min(context - prompt_len))
        }
    }
}

/// Checks prompt token ids against the vocabulary.
pub fn check_token_ids(ids: &[u32], vocab: usize) -> Result<(), ApiError> {
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::bad_param(
            "prompt",
            format!("Token id {bad} is out of range: the vocabulary has {vocab} tokens."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(json: &str) -> Vec<ChatMessage> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn roles_and_content_are_checked() {
        let ok = template_messages(&msgs(
            r#"[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]"#,
        ))
        .unwrap();
        assert_eq!(ok[0]["role"], "system");
        assert_eq!(ok[1]["content"], "a\nb");
        assert_eq!(ok[2]["content"], "");
        let e = template_messages(&msgs(r#"[{"role":"wizard","content":"x"}]"#)).unwrap_err();
        assert!(e.message.contains("wizard"));
        let e = template_messages(&[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = template_messages(&msgs(
            r#"[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]"#,
        ))
        .unwrap_err();
        assert!(e.message.contains("image_url"));
        assert!(template_messages(&msgs(r#"[{"role":"user","content":null}]"#)).is_err());
    }

    #[test]
    fn max_tokens_fit_the_context() {
        assert_eq!(max_tokens(None, 16, 10, 100, "prompt").unwrap(), 16);
        assert_eq!(max_tokens(None, usize::MAX, 10, 100, "prompt").unwrap(), 90);
        let e = max_tokens(Some(95), 16, 10, 100, "prompt").unwrap_err();
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        assert!(max_tokens(None, 16, 100, 100, "prompt").is_err());
    }
}
