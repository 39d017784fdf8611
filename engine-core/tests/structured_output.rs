//! Structured outputs on the default model: whatever the model prefers, what a grammar-constrained
//! sequence generates is a complete sentence of its grammar (a JSON value of its schema, a match
//! of its regular expression, one of its choices, a sentence of its Lark grammar), greedy and
//! sampled, alone and batched; a grammar the engine cannot use is refused when the request is
//! added.
#![cfg(feature = "grammars")]

mod common;

use std::sync::mpsc;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::chat::ChatRequest;
use engine_core::constraint::Grammar;
use engine_core::engine::{Engine, EngineConfig, EngineError, Event, FinishReason, Request};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::sampler::SamplingParams;
use rand::RngExt;

fn engine() -> Engine<CpuBackend> {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let backend = CpuBackend::new(CpuOptions::default()).unwrap();
    Engine::new(
        backend,
        &file,
        EngineConfig {
            context_size: 512,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn prompt(engine: &Engine<CpuBackend>, question: &str) -> Vec<u32> {
    let messages = [serde_json::json!({"role": "user", "content": question})];
    let text = engine
        .template()
        .render(&ChatRequest {
            messages: &messages,
            add_generation_prompt: true,
            bos_token: "",
            eos_token: "",
            tools: None,
        })
        .unwrap();
    engine.tokenizer().encode(&text, false, true)
}

/// Runs the requests together; returns each one's text and finish reason.
fn run(engine: &mut Engine<CpuBackend>, reqs: Vec<Request>) -> Vec<(String, FinishReason)> {
    let rxs: Vec<_> = reqs
        .into_iter()
        .map(|r| {
            let (tx, rx) = mpsc::channel();
            engine
                .add(r, Box::new(move |ev| tx.send(ev).is_ok()))
                .unwrap();
            rx
        })
        .collect();
    while engine.has_work() {
        pollster::block_on(engine.step()).unwrap();
    }
    rxs.iter()
        .map(|rx| {
            let mut text = String::new();
            let mut reason = None;
            for ev in rx.try_iter() {
                match ev {
                    Event::Token { text: t, .. } => text.push_str(&t),
                    Event::Finished {
                        reason: r, text: t, ..
                    } => {
                        text.push_str(&t);
                        reason = Some(r);
                    }
                    Event::Failed(e) => panic!("failed: {e}"),
                    _ => {}
                }
            }
            (text, reason.expect("finished"))
        })
        .collect()
}

fn constrained(prompt: Vec<u32>, grammar: Grammar, seed: Option<u64>) -> Request {
    let mut r = Request::greedy(prompt, 160);
    if let Some(seed) = seed {
        r.params = SamplingParams {
            temperature: 0.8,
            seed: Some(seed),
            ..SamplingParams::default()
        };
    }
    r.grammar = Some(grammar);
    r
}

#[test]
fn outputs_follow_their_grammars_greedy_sampled_and_batched() {
    let mut e = engine();
    let person = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3}
        },
        "required": ["name", "age", "pets"],
        "additionalProperties": false
    });
    let p = prompt(&e, "Describe a person as JSON.");
    let capital = prompt(&e, "Give the capital of France as JSON with one key.");
    let color = prompt(&e, "What color is the sky? Answer in one word.");
    let date = prompt(&e, "When did the Apollo 11 landing happen?");
    let lark = "start: \"The answer is \" NUM \".\"\nNUM: /[0-9]{1,3}/\n";
    let mut reqs = Vec::new();
    for seed in [None, Some(1), Some(2)] {
        reqs.push(constrained(
            p.clone(),
            Grammar::JsonSchema(person.clone()),
            seed,
        ));
        // Any object: the model decides its size, so only greedy is sure to finish in time.
        reqs.push(constrained(capital.clone(), Grammar::json_object(), None));
        reqs.push(constrained(
            color.clone(),
            Grammar::Choice(vec!["blue".into(), "green".into(), "red sky".into()]),
            seed,
        ));
        reqs.push(constrained(
            date.clone(),
            Grammar::Regex(r"(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]".into()),
            seed,
        ));
        reqs.push(constrained(color.clone(), Grammar::Lark(lark.into()), seed));
    }
    // Unconstrained neighbours in the same batches.
    reqs.push(Request::greedy(p.clone(), 40));
    let n = reqs.len();
    let out = run(&mut e, reqs);
    let date_rx = fancy_regex::Regex::new(r"^(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]$").unwrap();
    let lark_rx = fancy_regex::Regex::new(r"^The answer is [0-9]{1,3}\.$").unwrap();
    for (i, (text, reason)) in out.iter().enumerate().take(n - 1) {
        assert_eq!(
            *reason,
            FinishReason::Stop,
            "case {i} did not complete: {text:?}"
        );
        match i % 5 {
            0 => {
                let v: serde_json::Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("case {i}: {e}: {text:?}"));
                let o = v.as_object().expect("an object");
                assert_eq!(o.len(), 3, "{text}");
                assert!(o["name"].as_str().is_some_and(|s| s.chars().count() <= 20));
                assert!(o["age"].as_u64().is_some_and(|a| a <= 120), "{text}");
                let pets = o["pets"].as_array().unwrap();
                assert!(pets.len() <= 3);
                assert!(
                    pets.iter()
                        .all(|p| ["cat", "dog", "fish"].contains(&p.as_str().unwrap()))
                );
            }
            1 => {
                let v: serde_json::Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("case {i}: {e}: {text:?}"));
                assert!(v.is_object(), "{text}");
            }
            2 => assert!(
                ["blue", "green", "red sky"].contains(&text.as_str()),
                "{text:?}"
            ),
            3 => assert!(date_rx.is_match(text).unwrap(), "{text:?}"),
            _ => assert!(lark_rx.is_match(text).unwrap(), "{text:?}"),
        }
        eprintln!("case {i}: {text}");
    }
}

#[test]
fn grammars_the_engine_cannot_use_are_refused_when_added() {
    let mut e = engine();
    let p = prompt(&e, "Hi");
    for bad in [
        Grammar::JsonSchema(
            serde_json::json!({"type": "object", "properties": {"a": {"type": "frobnicate"}}}),
        ),
        Grammar::Regex("(unclosed".into()),
        Grammar::Lark("start: missing_rule\n".into()),
        Grammar::Choice(Vec::new()),
    ] {
        let mut r = Request::greedy(p.clone(), 4);
        r.grammar = Some(bad.clone());
        match e.add(r, Box::new(|_| true)) {
            Err(EngineError::Grammar(err)) => eprintln!("{bad:?}: {err}"),
            other => panic!("{bad:?} was not refused: {:?}", other.map(|_| ())),
        }
    }
    assert!(!e.has_work());
}

#[test]
fn masks_computed_ahead_are_those_computed_in_line() {
    let mut e = engine();
    // The trie built on another thread, as servers do.
    e.prepare_grammars();
    let schema = Grammar::JsonSchema(serde_json::json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 16}, "rank": {"type": "integer"}},
        "required": ["city", "rank"]
    }));
    let p = prompt(&e, "Name a big city and its rank as JSON.");
    let (tx, rx) = mpsc::channel();
    e.add(
        constrained(p, schema.clone(), Some(7)),
        Box::new(move |ev| tx.send(ev).is_ok()),
    )
    .unwrap();
    while e.has_work() {
        pollster::block_on(e.step()).unwrap();
    }
    let ids = common::judge::generated_ids(&rx);
    assert!(ids.len() > 5, "{ids:?}");
    let (mut ahead, mut in_line) = (
        e.compile_grammar(&schema).unwrap(),
        e.compile_grammar(&schema).unwrap(),
    );
    let vocab = e.tokenizer().vocab_size();
    let mut rng = rand::rng();
    for &id in &ids {
        let logits: Vec<f32> = (0..vocab).map(|_| rng.random_range(-8.0..8.0)).collect();
        let (mut a, mut b) = (logits.clone(), logits);
        ahead.prepare();
        ahead.mask(&mut a).unwrap();
        in_line.mask(&mut b).unwrap();
        assert_eq!(a, b);
        assert!(
            a[id as usize].is_finite(),
            "the engine sampled a masked token {id}"
        );
        ahead.accept(id).unwrap();
        in_line.accept(id).unwrap();
    }
    assert!(ahead.is_complete() && in_line.is_complete());
}
