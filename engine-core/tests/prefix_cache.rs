//! Automatic prefix caching on the default model: a request that starts with the tokens of an
//! earlier or running one computes only the rest, greedy outputs are identical with and without
//! a cache hit (alone, batched and under preemption), blocks are shared by reference and given
//! back, and cached blocks are evicted least recently used first when the pool needs them.

mod common;

use std::sync::mpsc;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::engine::{Engine, EngineConfig, Event, Request, StepReport};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::sampler::SamplingParams;

const BLOCK: usize = 16;

fn file() -> GgufFile {
    GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap()
}

fn config(kv_tokens: usize) -> EngineConfig {
    EngineConfig {
        context_size: 1024,
        max_seqs: 8,
        max_batch_tokens: 128,
        block_size: BLOCK,
        kv_tokens,
        ..EngineConfig::default()
    }
}

fn engine(file: &GgufFile, kv_tokens: usize, caching: bool) -> Engine<CpuBackend> {
    let backend = CpuBackend::new(CpuOptions::default()).unwrap();
    let mut e = Engine::new(backend, file, config(kv_tokens)).unwrap();
    e.set_prefix_caching(caching);
    e
}

/// A long shared system prompt, then a question.
fn prompt(e: &Engine<CpuBackend>, question: &str) -> Vec<u32> {
    let system = "You are a careful assistant for a library. Answer questions about books, \
                  opening hours and borrowing rules. Be brief and polite. "
        .repeat(4);
    let text = format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    );
    e.tokenizer().encode(&text, false, true)
}

const QUESTIONS: [&str; 8] = [
    "When do you open?",
    "Can I renew a book twice?",
    "Do you have audiobooks?",
    "How many books can I borrow?",
    "Is there a fine for late returns?",
    "Can children get a card?",
    "Where is the poetry section?",
    "Do you sell old books?",
];

/// Runs greedy requests together to completion: each one's generated tokens, and the step
/// reports summed.
fn run(
    e: &mut Engine<CpuBackend>,
    prompts: &[Vec<u32>],
    max_tokens: usize,
) -> (Vec<Vec<u32>>, StepReport) {
    let reqs = prompts
        .iter()
        .map(|p| Request::greedy(p.clone(), max_tokens))
        .collect();
    run_requests(e, reqs)
}

/// Runs the requests together to completion.
fn run_requests(e: &mut Engine<CpuBackend>, reqs: Vec<Request>) -> (Vec<Vec<u32>>, StepReport) {
    let mut rxs = Vec::new();
    for req in reqs {
        let (tx, rx) = mpsc::channel();
        e.add(req, Box::new(move |ev| tx.send(ev).is_ok())).unwrap();
        rxs.push(rx);
    }
    let mut total = StepReport::default();
    let mut steps = 0;
    while e.has_work() {
        let r = pollster::block_on(e.step()).unwrap();
        total.prefill_tokens += r.prefill_tokens;
        total.preempted += r.preempted;
        total.prefix_queries += r.prefix_queries;
        total.prefix_hits += r.prefix_hits;
        steps += 1;
        assert!(steps < 100_000, "no progress");
    }
    let outs = rxs
        .iter()
        .map(|rx| {
            rx.try_iter()
                .filter_map(|ev| match ev {
                    Event::Token { token, .. } => Some(token.id),
                    Event::Failed(m) => panic!("{m}"),
                    _ => None,
                })
                .collect()
        })
        .collect();
    (outs, total)
}

/// Tokens a hit can cover for a prompt sharing `common` tokens with the cache: whole blocks,
/// leaving at least the last prompt token to compute.
fn coverable(common: usize, len: usize) -> usize {
    common.min(len - 1) / BLOCK * BLOCK
}

#[test]
fn a_shared_system_prompt_is_computed_once_and_answers_do_not_change() {
    let file = file();
    let mut plain = engine(&file, 4096, false);
    let mut cached = engine(&file, 4096, true);
    let prompts: Vec<Vec<u32>> = QUESTIONS.iter().map(|q| prompt(&plain, q)).collect();
    let common = prompts[0]
        .iter()
        .zip(&prompts[1])
        .take_while(|(a, b)| a == b)
        .count();
    assert!(common > 100, "{common}");

    // First request: nothing cached.
    let (a, r) = run(&mut cached, &prompts[..1], 12);
    assert_eq!((r.prefix_queries, r.prefix_hits), (prompts[0].len(), 0));
    assert_eq!(r.prefill_tokens, prompts[0].len());
    assert_eq!(a, run(&mut plain, &prompts[..1], 12).0);
    assert!(cached.cached_blocks() > 0);
    assert_eq!(cached.kv_usage(), 0.0);

    // Second: the system prompt's whole blocks come from the cache.
    let (b, r) = run(&mut cached, &prompts[1..2], 12);
    let hit = coverable(common, prompts[1].len());
    assert_eq!(r.prefix_hits, hit);
    assert_eq!(r.prefill_tokens, prompts[1].len() - hit);
    assert_eq!(b, run(&mut plain, &prompts[1..2], 12).0);

    // The same prompt again: all but the block holding its last token.
    let (c, r) = run(&mut cached, &prompts[..1], 12);
    let n = prompts[0].len();
    assert_eq!(r.prefix_hits, coverable(n, n));
    assert_eq!(c, a);
}

#[test]
fn cached_prefixes_do_not_change_batched_or_preempted_answers() {
    let file = file();
    let mut plain = engine(&file, 4096, false);
    let prompts: Vec<Vec<u32>> = QUESTIONS.iter().map(|q| prompt(&plain, q)).collect();
    let singles: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| run(&mut plain, std::slice::from_ref(p), 16).0.remove(0))
        .collect();

    // Warm the cache with one request, then all eight at once share its blocks.
    let mut cached = engine(&file, 4096, true);
    run(&mut cached, &prompts[..1], 16);
    let (together, r) = run(&mut cached, &prompts, 16);
    assert_eq!(together, singles);
    // Every one found at least the system prompt's whole blocks.
    let common = prompts[0]
        .iter()
        .zip(&prompts[1])
        .take_while(|(a, b)| a == b)
        .count();
    assert!(r.prefix_hits >= 8 * (common / BLOCK * BLOCK), "{r:?}");
    assert_eq!(cached.kv_usage(), 0.0);

    // A pool too small for all of them: sequences are preempted, come back through the cache
    // (their own blocks, when still there), and every reference is given back at the end.
    let longest = prompts.iter().map(Vec::len).max().unwrap() + 16;
    let mut tight = engine(&file, longest + 3 * BLOCK, true);
    let (squeezed, r) = run(&mut tight, &prompts, 16);
    assert!(r.preempted > 0, "{r:?}");
    assert_eq!(squeezed, singles);
    assert_eq!(tight.kv_usage(), 0.0);
    let (total, free) = tight.kv_blocks();
    assert_eq!(total, free);
}

#[test]
fn cached_blocks_are_evicted_least_recently_used_first() {
    let file = file();
    // Room for about three of these prompts.
    let mut e = engine(&file, 3 * 160, true);
    let prompts: Vec<Vec<u32>> = (0..6)
        .map(|i| {
            let text = format!(
                "<|im_start|>user\nStory number {i}: {}<|im_end|>\n<|im_start|>assistant\n",
                format!("a tale of {i} travellers and their {i} horses. ").repeat(6)
            );
            e.tokenizer().encode(&text, false, true)
        })
        .collect();
    for p in &prompts {
        run(&mut e, std::slice::from_ref(p), 2);
    }
    let (total, _) = e.kv_blocks();
    assert!(e.cached_blocks() <= total);
    // The last prompt is still cached; the first was evicted for the later ones.
    let (_, last) = run(&mut e, &prompts[5..6], 2);
    assert!(last.prefix_hits > 0, "{last:?}");
    let (_, first) = run(&mut e, &prompts[0..1], 2);
    assert!(first.prefix_hits < last.prefix_hits, "{first:?} {last:?}");
    // Turning caching off gives every cached block back.
    e.set_prefix_caching(false);
    assert_eq!(e.cached_blocks(), 0);
    let (total, free) = e.kv_blocks();
    assert_eq!(total, free);
}

#[test]
fn choices_of_one_prompt_compute_it_once() {
    let file = file();
    let mut plain = engine(&file, 4096, false);
    let mut cached = engine(&file, 4096, true);
    let p = prompt(&plain, "Suggest a name for a reading club.");
    let n = p.len();
    // Four sampled choices of one prompt (n = 4), each with its own seed.
    let choices: Vec<Request> = (0..4)
        .map(|i| Request {
            params: SamplingParams {
                temperature: 0.9,
                top_p: 0.95,
                seed: Some(7 + i),
                ..SamplingParams::default()
            },
            ..Request::greedy(p.clone(), 12)
        })
        .collect();
    let (together, r) = run_requests(&mut cached, choices.clone());
    // The prompt once; each other choice only the part of its last block.
    let shared = coverable(n, n);
    assert_eq!(r.prefix_hits, 3 * shared, "{r:?}");
    assert_eq!(r.prefill_tokens, n + 3 * (n - shared), "{r:?}");
    // Each choice is what its seed gives alone.
    for (i, req) in choices.into_iter().enumerate() {
        let (alone, _) = run_requests(&mut plain, vec![req]);
        assert_eq!(together[i], alone[0], "choice {i}");
    }
    assert_ne!(together[0], together[1]);
}
