//! Automatic prefix caching through `tandem serve`: a second request sharing a long system
//! prompt finds its blocks in the cache (vLLM's prefix-cache counters in `/metrics`), and the
//! answer is the same as with caching turned off (`--no-prefix-caching`).

mod common;

use common::Server;
use serde_json::{Value, json};

fn chat(question: &str) -> Value {
    let system = "You answer questions about a small town's public library: opening hours, \
                  borrowing rules, fines and events. Keep answers short and friendly. "
        .repeat(5);
    json!({
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ],
        "max_tokens": 12,
        "temperature": 0,
    })
}

async fn answer(server: &Server, question: &str) -> String {
    let (status, body) = server.post("/v1/chat/completions", &chat(question)).await;
    assert_eq!(status, 200, "{body}");
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_shared_system_prompt_is_found_in_the_cache_without_changing_answers() {
    let cached = Server::start(&[]);
    let first = answer(&cached, "When do you open?").await;
    let queries = cached.metric("tandem_prefix_cache_queries_total").await;
    assert!(queries > 100.0, "{queries}");
    assert_eq!(cached.metric("tandem_prefix_cache_hits_total").await, 0.0);
    let second = answer(&cached, "Can I renew a book?").await;
    let hits = cached.metric("tandem_prefix_cache_hits_total").await;
    assert!(hits >= 96.0, "{hits}");
    assert!(cached.metric("tandem_prefix_cache_queries_total").await > 2.0 * queries - 50.0);

    let plain = Server::start(&["--no-prefix-caching"]);
    assert_eq!(answer(&plain, "When do you open?").await, first);
    assert_eq!(answer(&plain, "Can I renew a book?").await, second);
    assert_eq!(plain.metric("tandem_prefix_cache_hits_total").await, 0.0);
    assert_eq!(plain.metric("tandem_prefix_cache_queries_total").await, 0.0);
}
