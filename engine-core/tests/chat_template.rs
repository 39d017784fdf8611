//! Chat template rendering: the default model's template against the reference renderings, and
//! small templates exercising Hugging Face's Jinja conventions.

mod common;

use engine_core::chat::{
    CHATML_TEMPLATE, ChatDateTime, ChatRequest, ChatTemplate, ChatTemplateError,
};
use engine_core::gguf::{GgufFile, GgufWriter, ModelBytes, Value};
use engine_core::tokenizer::Tokenizer;
use serde_json::json;

fn request<'a>(
    messages: &'a [serde_json::Value],
    tools: Option<&'a serde_json::Value>,
) -> ChatRequest<'a> {
    ChatRequest {
        messages,
        add_generation_prompt: true,
        bos_token: "<s>",
        eos_token: "</s>",
        tools,
    }
}

fn render(source: &str, messages: &[serde_json::Value]) -> Result<String, ChatTemplateError> {
    ChatTemplate::new(source)?.render(&request(messages, None))
}

#[test]
fn default_model_matches_every_reference_rendering() {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let template = ChatTemplate::from_metadata(file.metadata()).unwrap();
    let tok = Tokenizer::from_metadata(file.metadata()).unwrap();
    let bos = tok.bos_id().and_then(|id| tok.token_piece(id)).unwrap();
    let eos = tok.eos_id().and_then(|id| tok.token_piece(id)).unwrap();

    let reference = common::reference_json("chat_template.json");
    assert_eq!(template.source(), reference["template"].as_str().unwrap());
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let messages = case["messages"].as_array().unwrap();
        let req = ChatRequest {
            messages,
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            bos_token: bos,
            eos_token: eos,
            tools: None,
        };
        assert_eq!(
            template.render(&req).unwrap(),
            case["rendered"].as_str().unwrap()
        );
    }
}

#[test]
fn chatml_when_the_model_has_no_template() {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    let file = GgufFile::new(ModelBytes::from_vec(w.to_bytes().unwrap())).unwrap();
    let template = ChatTemplate::from_metadata(file.metadata()).unwrap();
    assert_eq!(template.source(), CHATML_TEMPLATE);
    let messages = [
        json!({"role": "system", "content": "S"}),
        json!({"role": "user", "content": "Hi"}),
    ];
    assert_eq!(
        template.render(&request(&messages, None)).unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );

    w.set("tokenizer.chat_template", Value::U32(3));
    let file = GgufFile::new(ModelBytes::from_vec(w.to_bytes().unwrap())).unwrap();
    assert!(matches!(
        ChatTemplate::from_metadata(file.metadata()),
        Err(ChatTemplateError::InvalidMetadata)
    ));
}

const LLAMA3: &str = "{{- bos_token }}\n\
{%- if strftime_now is defined %}\n\
    {%- set date_string = strftime_now('%d %b %Y') %}\n\
{%- else %}\n\
    {%- set date_string = '26 Jul 2024' %}\n\
{%- endif %}\n\
{{- '<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: ' + date_string + '<|eot_id|>' }}\n\
{%- for message in messages %}\n\
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\n\
{%- endfor %}\n\
{%- if add_generation_prompt %}\n\
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n\
{%- endif %}\n";

#[test]
fn llama3_style_template() {
    let template = ChatTemplate::new(LLAMA3).unwrap();
    let messages = [json!({"role": "user", "content": "  Hi there \n"})];
    let mut req = request(&messages, None);
    req.bos_token = "<|begin_of_text|>";
    let expected_tail = "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
        <|start_header_id|>assistant<|end_header_id|>\n\n";
    assert_eq!(
        template.render(&req).unwrap(),
        format!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: 26 Jul 2024<|eot_id|>{expected_tail}"
        )
    );
    let now = ChatDateTime {
        year: 2025,
        month: 3,
        day: 9,
        hour: 12,
        minute: 0,
        second: 0,
    };
    assert_eq!(
        template.render_at(&req, Some(now)).unwrap(),
        format!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: 09 Mar 2025<|eot_id|>{expected_tail}"
        )
    );
    req.add_generation_prompt = false;
    assert!(
        !template
            .render(&req)
            .unwrap()
            .ends_with("assistant<|end_header_id|>\n\n")
    );
}

#[test]
fn trim_and_lstrip_blocks_without_trailing_newline() {
    let source = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU: {{ m.content }}\n    {% endif %}\n{% endfor %}\n";
    let messages = [
        json!({"role": "user", "content": "a"}),
        json!({"role": "assistant", "content": "x"}),
        json!({"role": "user", "content": "b"}),
    ];
    assert_eq!(render(source, &messages).unwrap(), "U: a\nU: b\n");
    assert_eq!(render("hello\n", &messages).unwrap(), "hello");
    // Explicit `-` still trims, and content is never HTML-escaped.
    let messages = [json!({"role": "user", "content": "<b>&'日本'"})];
    assert_eq!(
        render("{{- messages[0].content -}}\n", &messages).unwrap(),
        "<b>&'日本'"
    );
}

const TOOLS_TEMPLATE: &str = "{%- if tools is not none %}\n\
    {{- 'Tools: ' + tools | tojson + '\\n' }}\n\
{%- endif %}\n\
{%- for message in messages %}\n\
    {%- if message.role == 'system' %}{% continue %}{% endif %}\n\
    {%- if loop.index > 4 %}{% break %}{% endif %}\n\
    {%- if message.tool_calls is defined %}\n\
        {%- for call in message.tool_calls %}\n\
            {{- 'CALL ' + call.function.name + ' ' + call.function.arguments | tojson + '\\n' }}\n\
        {%- endfor %}\n\
    {%- else %}\n\
        {{- message.role | upper + ': ' + message.content.strip() + '\\n' }}\n\
    {%- endif %}\n\
{%- endfor %}\n";

#[test]
fn tools_tojson_and_loop_controls() {
    let tools = json!([{
        "function": {
            "description": "Weather for a city, in °C",
            "name": "get_weather",
            "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}
        },
        "type": "function"
    }]);
    let messages = [
        json!({"role": "system", "content": "skipped"}),
        json!({"role": "user", "content": " Weather in Paris? "}),
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"function": {"arguments": {"city": "Paris", "metric": true, "n": 1.5}, "name": "get_weather"}}
        ]}),
        json!({"role": "tool", "content": "21"}),
        json!({"role": "user", "content": "never shown: loop.index is 5"}),
    ];
    let template = ChatTemplate::new(TOOLS_TEMPLATE).unwrap();
    let out = template.render(&request(&messages, Some(&tools))).unwrap();
    assert_eq!(
        out,
        "Tools: [{\"function\": {\"description\": \"Weather for a city, in °C\", \"name\": \"get_weather\", \
         \"parameters\": {\"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"], \
         \"type\": \"object\"}}, \"type\": \"function\"}]\n\
         USER: Weather in Paris?\n\
         CALL get_weather {\"city\": \"Paris\", \"metric\": true, \"n\": 1.5}\n\
         TOOL: 21\n"
    );
    // Without tools, `tools` is none.
    let out = template.render(&request(&messages[1..2], None)).unwrap();
    assert_eq!(out, "USER: Weather in Paris?\n");
}

#[test]
fn tojson_options_and_python_values() {
    let messages = [json!({"role": "user", "content": "é", "meta": {"b": [1, 2], "a": {}}})];
    let out = render("{{ messages[0].meta | tojson(indent=2) }}", &messages).unwrap();
    let pretty = serde_json::to_string_pretty(&messages[0]["meta"]).unwrap();
    assert_eq!(out, pretty);
    assert_eq!(
        render(
            "{{ messages[0].content | tojson(ensure_ascii=true) }}",
            &messages
        )
        .unwrap(),
        "\"\\u00e9\""
    );
    assert_eq!(
        render(
            "{{ {'z': 1, 'a': [true, none]} | tojson(sort_keys=true) }}",
            &messages
        )
        .unwrap(),
        "{\"a\": [true, null], \"z\": 1}"
    );
    assert_eq!(
        render("{{ [1, 'x'] | tojson(separators=(',', ':')) }}", &messages).unwrap(),
        "[1,\"x\"]"
    );
    assert_eq!(
        render("{{ none }} {{ true }} {{ false }} {{ 1.0 }}", &messages).unwrap(),
        "None True False 1.0"
    );
}

#[test]
fn python_string_methods() {
    // Keys in sorted order, so the map's order is the same whichever map type serde_json uses.
    let messages = [json!({"content": "  hello world  ", "role": "user"})];
    let source = "{% set c = messages[0].content %}\
        {{ c.strip() }}|{{ c.lstrip() }}|{{ c.rstrip() }}|{{ c.strip().title() }}|{{ c.upper() }}|\
        {{ c.strip().split(' ') | join(',') }}|{{ c.strip().startswith('hell') }}|\
        {{ c.strip().endswith('x') }}|{{ c.replace('o', '0') }}|\
        {% for k, v in messages[0].items() %}{{ k }}={{ v | length }};{% endfor %}|\
        {{ messages[0].get('missing', 'dflt') }}";
    assert_eq!(
        render(source, &messages).unwrap(),
        "hello world|hello world  |  hello world|Hello World|  HELLO WORLD  |hello,world|True|False|  hell0 w0rld  |content=15;role=4;|dflt"
    );
}

#[test]
fn namespace_and_loop_variables() {
    let source = "{%- set ns = namespace(last=-1) %}\
        {%- for m in messages %}{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}\
        {{- ns.last }} {{ messages | length }}\
        {%- for m in messages %} {{ loop.first }}/{{ loop.last }}{% endfor %}";
    let messages = [
        json!({"role": "user", "content": "a"}),
        json!({"role": "assistant", "content": "b"}),
        json!({"role": "user", "content": "c"}),
    ];
    assert_eq!(
        render(source, &messages).unwrap(),
        "2 3 True/False False/False False/True"
    );
}

#[test]
fn raise_exception_is_a_typed_error() {
    let source = "{%- if messages[0]['role'] == 'system' %}\
        {{- raise_exception('System role not supported') }}\
        {%- endif %}ok";
    let messages = [json!({"role": "system", "content": "x"})];
    match render(source, &messages) {
        Err(ChatTemplateError::Raised { message }) => {
            assert_eq!(message, "System role not supported")
        }
        other => panic!("expected Raised, got {other:?}"),
    }
    let messages = [json!({"role": "user", "content": "x"})];
    assert_eq!(render(source, &messages).unwrap(), "ok");
}

#[test]
fn syntax_and_render_errors_are_typed() {
    for bad in [
        "{% for x in %}",
        "{{ messages[0] ",
        "{% if true %}unclosed",
        "{% endfor %}",
    ] {
        match ChatTemplate::new(bad) {
            Err(ChatTemplateError::Syntax { line, message }) => {
                assert_eq!(line, Some(1), "{bad}: {message}");
            }
            other => panic!("{bad}: expected Syntax, got {other:?}"),
        }
    }
    let messages = [json!({"role": "user", "content": "x"})];
    let runtime = [
        "{{ messages[0].content.no_such_method() }}",
        "{{ messages[0].role + 1 }}",
        "{{ undefined_thing.attr }}",
        "{{ no_such_function() }}",
    ];
    for src in runtime {
        match render(src, &messages) {
            Err(ChatTemplateError::Render { .. }) => {}
            other => panic!("{src}: expected Render, got {other:?}"),
        }
    }
}

#[test]
fn mistral_style_alternation_and_negative_indexing() {
    let source = "{{- bos_token }}\
        {%- for message in messages %}\
        {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\
        {%- endif %}\
        {%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}\
        {%- else %}{{- message['content'].split('</think>')[-1].strip() + eos_token }}{%- endif %}\
        {%- endfor %}|{{ messages[-1]['role'] }}";
    let messages = [
        json!({"role": "user", "content": "a"}),
        json!({"role": "assistant", "content": "<think>hmm</think> b"}),
        json!({"role": "user", "content": "c"}),
    ];
    assert_eq!(
        render(source, &messages).unwrap(),
        "<s>[INST] a [/INST]b</s>[INST] c [/INST]|user"
    );
    let bad = [json!({"role": "assistant", "content": "x"})];
    assert!(matches!(
        render(source, &bad),
        Err(ChatTemplateError::Raised { .. })
    ));
}
