//! The continuous-batching scheduler on the default model: batching, chunked prefill and
//! preemption never change what a greedy request generates; cancelled and finished sequences give
//! their KV blocks back; the engine service runs the same way on its own thread.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::engine::{
    Engine, EngineConfig, EngineService, Event, FinishReason, PromptLogprob, Request,
    ServiceOptions, SubmitError,
};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::sampler::SamplingParams;

fn file() -> GgufFile {
    GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap()
}

fn engine(file: &GgufFile, config: EngineConfig) -> Engine<CpuBackend> {
    let backend = CpuBackend::new(CpuOptions::default()).unwrap();
    Engine::new(backend, file, config).unwrap()
}

/// Varied prompts: different lengths so that prefill chunks and decodes mix.
fn prompts(engine: &Engine<CpuBackend>, n: usize) -> Vec<Vec<u32>> {
    let topics = [
        "Why is the sky blue?",
        "Write a haiku about rain.",
        "List three fruits.",
        "What is the capital of France? Answer in one sentence and explain how you know.",
        "Explain photosynthesis to a child.",
        "Count from one to ten.",
        "What is 2 + 2?",
        "Describe a cat.",
    ];
    (0..n)
        .map(|i| {
            let text = format!(
                "<|im_start|>user\n{} (#{i}){}<|im_end|>\n<|im_start|>assistant\n",
                topics[i % topics.len()],
                " Please be detailed.".repeat(i % 5)
            );
            engine.tokenizer().encode(&text, false, true)
        })
        .collect()
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Outcome {
    tokens: Vec<u32>,
    text: String,
    finish: Option<FinishReason>,
    prompt_logprobs: Option<Vec<PromptLogprob>>,
}

fn collect(rx: &mpsc::Receiver<Event>) -> Outcome {
    let mut out = Outcome::default();
    for ev in rx.try_iter() {
        match ev {
            Event::Token { token, text } => {
                out.tokens.push(token.id);
                out.text.push_str(&text);
            }
            Event::Finished { reason, text, .. } => {
                out.text.push_str(&text);
                out.finish = Some(reason);
            }
            Event::PromptLogprobs(p) => out.prompt_logprobs = Some(p),
            Event::Embedding(_) => panic!("no embedding was asked for"),
            Event::Failed(e) => panic!("sequence failed: {e}"),
        }
    }
    out
}

/// Runs the requests together (all added up front) to completion.
fn run_all(engine: &mut Engine<CpuBackend>, reqs: Vec<Request>) -> (Vec<Outcome>, usize) {
    let mut rxs = Vec::new();
    for req in reqs {
        let (tx, rx) = mpsc::channel();
        engine
            .add(req, Box::new(move |ev| tx.send(ev).is_ok()))
            .unwrap();
        rxs.push(rx);
    }
    let mut preempted = 0;
    let mut steps = 0;
    while engine.has_work() {
        let report = pollster::block_on(engine.step()).unwrap();
        preempted += report.preempted;
        steps += 1;
        assert!(steps < 100_000, "the engine does not make progress");
    }
    (rxs.iter().map(collect).collect(), preempted)
}

#[test]
fn batching_and_preemption_do_not_change_greedy_outputs() {
    let file = file();
    let config = EngineConfig {
        context_size: 512,
        max_seqs: 16,
        max_batch_tokens: 96,
        kv_tokens: 16 * 128,
        ..EngineConfig::default()
    };
    let mut alone = engine(&file, config.clone());
    let prompts = prompts(&alone, 16);
    let reqs: Vec<Request> = prompts
        .iter()
        .map(|p| Request::greedy(p.clone(), 24))
        .collect();
    let singles: Vec<Outcome> = reqs
        .iter()
        .map(|r| run_all(&mut alone, vec![r.clone()]).0.remove(0))
        .collect();
    for s in &singles {
        assert!(!s.tokens.is_empty());
        assert!(s.finish.is_some());
    }
    assert_eq!(alone.kv_usage(), 0.0);

    // 16 at once, with a small token budget so that prefill is chunked and mixed with decodes.
    let (together, preempted) = run_all(&mut alone, reqs.clone());
    assert_eq!(preempted, 0);
    for (i, (a, b)) in singles.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "request {i} differs when batched with 15 others");
    }
    assert_eq!(alone.kv_usage(), 0.0);

    // A cache too small for all of them at once: sequences are preempted and recomputed.
    let longest = prompts.iter().map(Vec::len).max().unwrap() + 24;
    let mut tight = engine(
        &file,
        EngineConfig {
            kv_tokens: longest * 3,
            ..config
        },
    );
    let (squeezed, preempted) = run_all(&mut tight, reqs);
    assert_eq!(tight.kv_usage(), 0.0);
    for (i, (a, b)) in singles.iter().zip(&squeezed).enumerate() {
        assert_eq!(a, b, "request {i} differs under memory pressure");
    }
    eprintln!("preemptions under memory pressure: {preempted}");
}

#[test]
fn prompt_logprobs_survive_chunking_and_preemption() {
    let file = file();
    let mut e = engine(
        &file,
        EngineConfig {
            context_size: 512,
            ..EngineConfig::default()
        },
    );
    let long: Vec<u32> = {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        e.tokenizer().encode(&text, false, false)
    };
    assert!(long.len() > 130, "the prompt spans several logprob chunks");
    let req = Request {
        prompt_logprobs: Some(2),
        ..Request::greedy(long.clone(), 0)
    };
    let (mut out, _) = run_all(&mut e, vec![req.clone()]);
    let reference = out.remove(0);
    let lp = reference.prompt_logprobs.clone().expect("prompt logprobs");
    assert_eq!(lp.len(), long.len());
    assert_eq!(lp[0].logprob, None);
    assert!(lp[1..].iter().all(|p| p.logprob.is_some_and(|l| l <= 0.0)));
    assert!(lp[1..].iter().all(|p| p.top.len() == 2));
    assert_eq!(reference.finish, Some(FinishReason::Length));
    assert!(reference.tokens.is_empty());

    // A scorer beside a decoder in caches too small for both: with small blocks the decoder
    // keeps needing new ones while the scorer is still in prefill, so the scorer is preempted
    // and recomputed. Its prompt log-probabilities must come out whole and unchanged.
    let mut decoder = Request::greedy(long[..40].to_vec(), 60);
    decoder.ignore_eos = true;
    let (alone, _) = run_all(&mut e, vec![decoder.clone()]);
    let scorer_blocks = (long.len() + 1).div_ceil(4);
    let mut preemptions = 0;
    for extra in 9..14 {
        let mut tight = engine(
            &file,
            EngineConfig {
                context_size: 512,
                kv_tokens: (scorer_blocks + extra) * 4,
                block_size: 4,
                max_batch_tokens: 32,
                ..EngineConfig::default()
            },
        );
        let (outs, preempted) = run_all(&mut tight, vec![decoder.clone(), req.clone()]);
        preemptions += preempted;
        assert_eq!(tight.kv_usage(), 0.0);
        assert_eq!(
            outs[0], alone[0],
            "the decoder changed (cache of {extra} spare blocks)"
        );
        let got = outs[1].prompt_logprobs.as_ref().unwrap_or_else(|| {
            panic!(
                "no prompt logprobs with {extra} spare blocks ({preempted} preemptions): {:?}",
                outs[1].finish
            )
        });
        assert_eq!(got.len(), lp.len(), "cache of {extra} spare blocks");
        for (a, b) in got.iter().zip(&lp) {
            assert_eq!(a.id, b.id);
            let (x, y) = (a.logprob.unwrap_or(0.0), b.logprob.unwrap_or(0.0));
            assert!((x - y).abs() < 1e-3, "prompt logprob {x} vs {y}");
        }
    }
    assert!(preemptions > 0, "no configuration forced a preemption");
}

#[test]
fn cancel_and_deaf_listeners_free_blocks() {
    let file = file();
    let mut e = engine(
        &file,
        EngineConfig {
            context_size: 256,
            ..EngineConfig::default()
        },
    );
    let prompt = prompts(&e, 1).remove(0);
    let (tx, rx) = mpsc::channel();
    let id = e
        .add(
            Request::greedy(prompt.clone(), 200),
            Box::new(move |ev| tx.send(ev).is_ok()),
        )
        .unwrap();
    for _ in 0..3 {
        pollster::block_on(e.step()).unwrap();
    }
    assert!(e.kv_usage() > 0.0);
    e.cancel(id);
    assert_eq!(e.kv_usage(), 0.0);
    assert!(!e.has_work());
    let out = collect(&rx);
    assert_eq!(out.finish, Some(FinishReason::Cancelled));

    // A listener that goes away: the sequence is dropped within one step.
    let (tx, rx) = mpsc::channel::<Event>();
    e.add(
        Request::greedy(prompt, 200),
        Box::new(move |ev| tx.send(ev).is_ok()),
    )
    .unwrap();
    pollster::block_on(e.step()).unwrap();
    drop(rx);
    pollster::block_on(e.step()).unwrap();
    pollster::block_on(e.step()).unwrap();
    assert_eq!(e.running(), 0);
    assert_eq!(e.kv_usage(), 0.0);
}

#[test]
fn sequences_larger_than_the_cache_end_instead_of_hanging() {
    let file = file();
    let mut e = engine(
        &file,
        EngineConfig {
            context_size: 512,
            kv_tokens: 64,
            block_size: 16,
            ..EngineConfig::default()
        },
    );
    let prompt = prompts(&e, 1).remove(0);
    assert!(prompt.len() < 60);
    let mut req = Request::greedy(prompt.clone(), 400);
    req.ignore_eos = true;
    let (outs, _) = run_all(&mut e, vec![req.clone(), req]);
    for o in outs {
        assert_eq!(o.finish, Some(FinishReason::Length));
        // The last token is sampled, never stored.
        assert!(prompt.len() + o.tokens.len() <= 65);
    }
    assert_eq!(e.kv_usage(), 0.0);
}

#[test]
fn service_runs_requests_and_reports_gauges() {
    let file = file();
    let e = engine(
        &file,
        EngineConfig {
            context_size: 256,
            max_seqs: 2,
            ..EngineConfig::default()
        },
    );
    let prompt = prompts(&e, 1).remove(0);
    let mut single = engine(
        &file,
        EngineConfig {
            context_size: 256,
            ..EngineConfig::default()
        },
    );
    let (mut want, _) = run_all(&mut single, vec![Request::greedy(prompt.clone(), 16)]);
    let want = want.remove(0);

    let service = EngineService::start(
        e,
        ServiceOptions {
            max_waiting: 1,
            ..ServiceOptions::default()
        },
    );
    assert_eq!(service.info().config.max_seqs, 2);
    let submit = |req: Request| {
        let (tx, rx) = mpsc::channel();
        let (rtx, rrx) = mpsc::channel();
        service
            .submit(
                req,
                Box::new(move |ev| tx.send(ev).is_ok()),
                Box::new(move |r| rtx.send(r.map_err(|e| e.to_string())).is_ok()),
            )
            .map(|()| (rx, rrx))
    };
    // An invalid request is refused through the reply.
    let (_, reply) = submit(Request::greedy(Vec::new(), 4)).unwrap();
    assert!(reply.recv().unwrap().unwrap_err().contains("empty"));

    let (rx, reply) = submit(Request::greedy(prompt.clone(), 16)).unwrap();
    reply.recv().unwrap().unwrap();
    let mut got = Outcome::default();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)).unwrap() {
            Event::Token { token, text } => {
                got.tokens.push(token.id);
                got.text.push_str(&text);
            }
            Event::Finished { reason, text, .. } => {
                got.text.push_str(&text);
                got.finish = Some(reason);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, want);

    // Fill the queue: 2 running + 1 waiting, then the next is refused.
    let mut long = Request::greedy(prompt.clone(), 200);
    long.ignore_eos = true;
    let held: Vec<_> = (0..3).map(|_| submit(long.clone()).unwrap()).collect();
    for (_, reply) in &held {
        reply.recv().unwrap().unwrap();
    }
    match submit(long.clone()) {
        Err(SubmitError::QueueFull { limit: 3, .. }) => {}
        other => panic!("expected a full queue, got {:?}", other.map(|_| ())),
    }
    // Every listener goes away: the engine drops the sequences and the cache empties.
    drop(held);
    let mut idle = false;
    for _ in 0..600 {
        let s = service.stats();
        if s.running == 0 && s.waiting == 0 && s.kv_usage == 0.0 {
            idle = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        idle,
        "the engine did not drop abandoned sequences: {:?}",
        service.stats()
    );
    let stats = service.stats();
    assert!(stats.generated_tokens >= 16);
    assert!(stats.prefill_tokens >= prompt.len() as u64);
    service.shutdown();
}

#[test]
fn seeded_sampling_is_batch_independent() {
    let file = file();
    let mut e = engine(
        &file,
        EngineConfig {
            context_size: 256,
            ..EngineConfig::default()
        },
    );
    let prompts = prompts(&e, 4);
    let reqs: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            params: SamplingParams {
                temperature: 0.9,
                top_p: 0.95,
                seed: Some(i as u64),
                ..SamplingParams::default()
            },
            ..Request::greedy(p.clone(), 16)
        })
        .collect();
    let singles: Vec<Outcome> = reqs
        .iter()
        .map(|r| run_all(&mut e, vec![r.clone()]).0.remove(0))
        .collect();
    let (together, _) = run_all(&mut e, reqs);
    assert_eq!(singles, together);
}

/// Runs one request alone, returning its outcome and the prompt tokens the engine computed.
fn run_counting(engine: &mut Engine<CpuBackend>, req: Request) -> (Outcome, usize) {
    let (tx, rx) = mpsc::channel();
    engine
        .add(req, Box::new(move |ev| tx.send(ev).is_ok()))
        .unwrap();
    let mut prefill = 0;
    while engine.has_work() {
        prefill += pollster::block_on(engine.step()).unwrap().prefill_tokens;
    }
    (collect(&rx), prefill)
}

#[test]
fn a_retained_prefix_is_continued_by_the_next_turn_without_changing_it() {
    let file = file();
    let config = EngineConfig {
        context_size: 512,
        max_seqs: 4,
        max_batch_tokens: 64,
        kv_tokens: 1024,
        ..EngineConfig::default()
    };
    let mut fresh = engine(&file, config.clone());
    let mut chat = engine(&file, config);
    chat.set_retain_prefix(true);
    let enc = |e: &Engine<CpuBackend>, text: &str| e.tokenizer().encode(text, false, true);
    let turn1 = enc(
        &fresh,
        "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    );
    let (a1, computed1) = run_counting(&mut chat, Request::greedy(turn1.clone(), 16));
    assert_eq!(computed1, turn1.len());
    assert_eq!(
        a1,
        run_counting(&mut fresh, Request::greedy(turn1.clone(), 16)).0
    );
    // The next turn: the whole first exchange, then a new question.
    let mut turn2 = turn1.clone();
    turn2.extend(&a1.tokens);
    turn2.extend(enc(
        &fresh,
        "<|im_end|>\n<|im_start|>user\nAnd three more?<|im_end|>\n<|im_start|>assistant\n",
    ));
    assert!(chat.retained_tokens() >= turn1.len());
    let (a2, computed2) = run_counting(&mut chat, Request::greedy(turn2.clone(), 16));
    let (b2, full2) = run_counting(&mut fresh, Request::greedy(turn2.clone(), 16));
    assert_eq!(a2, b2, "continuing the cached turn changed the answer");
    assert_eq!(full2, turn2.len());
    // Everything up to the last token of the first answer was cached.
    assert_eq!(computed2, turn2.len() - (turn1.len() + a1.tokens.len() - 1));
    // A prompt that shares only its first token (`<|im_start|>`) recomputes everything else.
    let other = enc(&fresh, "<|im_start|>system\nBe brief.<|im_end|>\n");
    let (c3, computed3) = run_counting(&mut chat, Request::greedy(other.clone(), 4));
    assert_eq!(computed3, other.len() - 1);
    assert_eq!(
        c3,
        run_counting(&mut fresh, Request::greedy(other.clone(), 4)).0
    );
    chat.set_retain_prefix(false);
    assert_eq!(chat.kv_usage(), 0.0);
    assert_eq!(fresh.kv_usage(), 0.0);
}

/// In which order the requests' first tokens came out.
fn first_token_order(engine: &mut Engine<CpuBackend>, reqs: Vec<Request>) -> Vec<usize> {
    let mut rxs = Vec::new();
    for req in reqs {
        let (tx, rx) = mpsc::channel();
        engine
            .add(req, Box::new(move |ev| tx.send(ev).is_ok()))
            .unwrap();
        rxs.push(rx);
    }
    let mut order = Vec::new();
    let mut started = vec![false; rxs.len()];
    while engine.has_work() {
        pollster::block_on(engine.step()).unwrap();
        for (i, rx) in rxs.iter().enumerate() {
            if !started[i] && rx.try_iter().any(|e| matches!(e, Event::Token { .. })) {
                started[i] = true;
                order.push(i);
            }
        }
    }
    order
}

#[test]
fn a_flow_flooding_the_queue_does_not_hold_back_another() {
    let file = file();
    let config = EngineConfig {
        context_size: 256,
        max_seqs: 2,
        max_batch_tokens: 64,
        ..EngineConfig::default()
    };
    let mut e = engine(&file, config);
    let prompt = prompts(&e, 1).remove(0);
    // Twelve requests of flow a, then one of flow b.
    let mut reqs: Vec<Request> = (0..12)
        .map(|_| Request {
            flow: flow("a"),
            ..Request::greedy(prompt.clone(), 4)
        })
        .collect();
    reqs.push(Request {
        flow: flow("b"),
        ..Request::greedy(prompt.clone(), 4)
    });
    let order = first_token_order(&mut e, reqs.clone());
    let b_at = order.iter().position(|&i| i == 12).unwrap();
    // b starts with the first batch of a's (two slots): never behind the flood.
    assert!(b_at <= 2, "b started {b_at}th: {order:?}");
    // Without flows it is arrival order: b last.
    let plain: Vec<Request> = reqs
        .into_iter()
        .map(|r| Request { flow: None, ..r })
        .collect();
    let order = first_token_order(&mut e, plain);
    assert_eq!(order.last(), Some(&12), "{order:?}");
}

fn flow(id: &str) -> Option<engine_core::engine::Flow> {
    Some(engine_core::engine::Flow {
        id: id.into(),
        weight: 1,
    })
}

/// An engine with `max_seqs` slots running flow a's two long answers (`max_tokens` each) for
/// `steps` steps, then given flow b's short request: gives it, a's answers when each ran alone,
/// and the receivers of a's two and of b's.
fn b_after_a(
    max_seqs: usize,
    max_tokens: usize,
    steps: usize,
) -> (
    Engine<CpuBackend>,
    Vec<Outcome>,
    Vec<mpsc::Receiver<Event>>,
    mpsc::Receiver<Event>,
) {
    let config = EngineConfig {
        context_size: 256,
        max_seqs,
        max_batch_tokens: 64,
        ..EngineConfig::default()
    };
    let mut e = engine(&file(), config);
    let ps = prompts(&e, 3);
    let long = |p: &Vec<u32>| Request {
        flow: flow("a"),
        ignore_eos: true,
        ..Request::greedy(p.clone(), max_tokens)
    };
    let alone: Vec<Outcome> = ps[..2]
        .iter()
        .map(|p| run_all(&mut e, vec![long(p)]).0.remove(0))
        .collect();
    let mut rxs = Vec::new();
    for p in &ps[..2] {
        let (tx, rx) = mpsc::channel();
        e.add(long(p), Box::new(move |ev| tx.send(ev).is_ok()))
            .unwrap();
        rxs.push(rx);
    }
    for _ in 0..steps {
        pollster::block_on(e.step()).unwrap();
    }
    let (tx, rx_b) = mpsc::channel();
    e.add(
        Request {
            flow: flow("b"),
            ..Request::greedy(ps[2].clone(), 4)
        },
        Box::new(move |ev| tx.send(ev).is_ok()),
    )
    .unwrap();
    (e, alone, rxs, rx_b)
}

/// Waits until `e` is idle; checks that flow a's answers are what they were alone.
fn finish_as_alone(e: &mut Engine<CpuBackend>, alone: &[Outcome], rxs: &[mpsc::Receiver<Event>]) {
    while e.has_work() {
        pollster::block_on(e.step()).unwrap();
    }
    let together: Vec<Outcome> = rxs.iter().map(collect).collect();
    for (t, a) in together.iter().zip(alone) {
        assert_eq!(t.tokens, a.tokens);
    }
}

#[test]
fn a_new_flow_takes_a_slot_from_a_flow_above_its_share_without_changing_its_output() {
    // Two long answers of flow a fill both slots; then b asks.
    let (mut e, alone, rxs, rx_b) = b_after_a(2, 48, 8);
    let mut b_started = None;
    let mut steps = 0;
    let mut events_b = Vec::new();
    while e.has_work() {
        pollster::block_on(e.step()).unwrap();
        steps += 1;
        events_b.extend(rx_b.try_iter());
        if b_started.is_none() && events_b.iter().any(|ev| matches!(ev, Event::Token { .. })) {
            b_started = Some(steps);
        }
    }
    // b started within a few steps, long before a's answers (40 more tokens) ended ...
    assert!(
        b_started.is_some_and(|s| s <= 4),
        "b started at step {b_started:?}"
    );
    // ... and a's answers are what they are alone, although one was preempted and recomputed.
    finish_as_alone(&mut e, &alone, &rxs);
}

#[test]
fn a_flows_first_sequence_has_a_step_of_its_own() {
    // Two long answers of flow a in four slots; then b asks.
    let (mut e, alone, rxs, rx_b) = b_after_a(4, 24, 4);
    // b's prompt, alone: a's two decodes wait one step.
    let report = pollster::block_on(e.step()).unwrap();
    assert_eq!(report.decoded, 1, "{report:?}");
    assert!(report.prefill_tokens > 0, "{report:?}");
    assert!(rx_b.try_iter().any(|ev| matches!(ev, Event::Token { .. })));
    // The next step decodes all three.
    let report = pollster::block_on(e.step()).unwrap();
    assert_eq!(report.decoded, 3, "{report:?}");
    finish_as_alone(&mut e, &alone, &rxs);
}

#[test]
fn abandoned_steps_run_again_without_changing_outputs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let file = file();
    let config = EngineConfig {
        context_size: 256,
        max_seqs: 4,
        max_batch_tokens: 32,
        ..EngineConfig::default()
    };
    let mut e = engine(&file, config);
    let reqs: Vec<Request> = prompts(&e, 4)
        .into_iter()
        .map(|p| Request::greedy(p, 16))
        .collect();
    let (alone, _) = run_all(&mut e, reqs.clone());

    // Another thread keeps asking to abandon the step in progress.
    let flag = e.interrupt_handle();
    let done = Arc::new(AtomicBool::new(false));
    let setter = {
        let (flag, done) = (Arc::clone(&flag), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                flag.store(true, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };
    let mut rxs = Vec::new();
    for req in reqs {
        let (tx, rx) = mpsc::channel();
        e.add(req, Box::new(move |ev| tx.send(ev).is_ok())).unwrap();
        rxs.push(rx);
    }
    let (mut abandoned, mut steps) = (0, 0);
    while e.has_work() {
        let report = pollster::block_on(e.step()).unwrap();
        if report.abandoned {
            abandoned += 1;
            // Nothing was computed or delivered.
            assert_eq!((report.decoded, report.prefill_tokens), (0, 0));
        }
        steps += 1;
        assert!(steps < 10_000, "the engine does not make progress");
    }
    done.store(true, Ordering::Relaxed);
    setter.join().unwrap();
    assert!(abandoned > 0, "no step was abandoned in {steps}");
    // Never twice in a row: at least every other step runs to its end.
    assert!(
        abandoned * 2 <= steps + 1,
        "{abandoned} of {steps} abandoned"
    );
    let interrupted: Vec<Outcome> = rxs.iter().map(collect).collect();
    assert_eq!(interrupted, alone);
    assert_eq!(e.kv_usage(), 0.0);
}
