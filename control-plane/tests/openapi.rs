//! `/openapi.json` against the routes: every documented operation reaches its route, the app
//! registers no route outside the document, every reference resolves, and the copy checked in
//! at `control-plane/openapi.json` is the one the server serves (regenerate it with
//! `TANDEM_WRITE_OPENAPI=1 cargo test -p control-plane --test openapi`).

#[path = "common/fake.rs"]
mod fake;

use std::collections::BTreeSet;

use control_plane::gateway::Policy;
use control_plane::gateway::cost::CostModel;
use fake::{Behavior, FakeServer, app, call, handle, test_settings};
use serde_json::Value;

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "head", "options"];

async fn served_document() -> (axum::Router, Value) {
    let up = FakeServer::start(&["m"], Behavior::Answer(vec!["hi"])).await;
    let (app, _) = app(
        vec![handle("a", &up, test_settings(CostModel::default())).await],
        Policy::Balanced,
    );
    let (status, body) = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200, "{body}");
    (
        app,
        serde_json::from_str(&body).expect("the document is JSON"),
    )
}

/// `(method, path)` of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(*m).is_some() {
                out.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Whether the metrics count a request matched to a route whose axum path is `documented` (with
/// each `{param}` possibly written as axum's wildcard `{*param}`).
fn counted(metrics: &str, documented: &str) -> bool {
    metrics.lines().any(|line| {
        let Some(rest) = line.strip_prefix("tandem_requests_total{endpoint=\"") else {
            return false;
        };
        let endpoint = rest.split('"').next().unwrap_or("");
        endpoint == documented || endpoint.replace("{*", "{") == documented
    })
}

#[tokio::test]
async fn every_documented_operation_reaches_its_route() {
    let (app, doc) = served_document().await;
    let ops = operations(&doc);
    assert!(ops.len() >= 30, "{} operations", ops.len());
    for (method, path) in &ops {
        // Path parameters get a plain value; bodies are left out (a 400 still means routed).
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let (status, body) = call(&app, method, &concrete, None).await;
        assert_ne!(status, 405, "{method} {path}: {body}");
        let (_, metrics) = call(&app, "GET", "/metrics", None).await;
        assert!(
            counted(&metrics, path),
            "{method} {path} ({concrete}) matched no route: {status} {body}"
        );
    }
    // A path outside the document is no route.
    let (status, _) = call(&app, "GET", "/v1/nothing-here", None).await;
    assert_eq!(status, 404);
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(!counted(&metrics, "/v1/nothing-here"));
}

#[test]
fn the_app_registers_routes_only_from_documented_handlers() {
    let app = include_str!("../src/server/app.rs");
    for plain in [".route(", ".route_service(", ".nest(", ".nest_service("] {
        assert!(
            !app.contains(plain),
            "server/app.rs calls {plain}: register routes with `.routes(routes!(handler))` so the \
             OpenAPI document lists them"
        );
    }
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(s) = x.as_str() {
                        out.insert(s.to_owned());
                    }
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_operation_is_described_and_every_reference_resolves() {
    let (_, doc) = served_document().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["info"]["title"], "Tandem");
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert!(
            op["summary"]
                .as_str()
                .is_some_and(|s| s.len() > 4 && !s.contains('\n')),
            "{method} {path} has no one-line summary"
        );
        assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()));
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('2') || s.starts_with('3')),
            "{method} {path} documents no success"
        );
        for name in path.split('/').filter_map(|s| s.strip_prefix('{')) {
            let name = name.trim_end_matches('}');
            let documented = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
            assert!(
                documented,
                "{method} {path}: parameter {name} is not described"
            );
        }
    }
    let ids: Vec<&str> = operations(&doc)
        .iter()
        .map(|(m, p)| {
            doc["paths"][p][m.to_lowercase()]["operationId"]
                .as_str()
                .expect("operationId")
        })
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "operation ids repeat: {ids:?}");
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    assert!(all.contains("#/components/schemas/ChatCompletionRequest"));
    for r in &all {
        let pointer = r.strip_prefix('#').expect("local reference");
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    for scheme in ["api_key", "admin_key"] {
        assert_eq!(
            doc["components"]["securitySchemes"][scheme]["scheme"],
            "bearer"
        );
    }
}

#[tokio::test]
async fn the_checked_in_document_is_the_served_one() {
    let (_, doc) = served_document().await;
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("TANDEM_WRITE_OPENAPI").is_some() {
        std::fs::write(&file, &text).unwrap();
    }
    let checked_in = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        checked_in == text,
        "control-plane/openapi.json is out of date: run \
         `TANDEM_WRITE_OPENAPI=1 cargo test -p control-plane --test openapi` and commit it"
    );
}
