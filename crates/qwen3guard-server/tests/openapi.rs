//! `/openapi.json` is the checked-in `docs/openapi.json`, and it describes every route.

mod common;

use std::path::PathBuf;

use common::TestServer;
use qwen3guard_server::{AppState, ServerConfig};

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_served_document_is_the_checked_in_one() {
    // No models are needed to describe the API.
    let server = TestServer::with_state(AppState::new(ServerConfig::default()));
    let reply = server.get("/openapi.json");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let served = reply.text();
    if std::env::var_os("QWEN3GUARD_BLESS").is_some() {
        std::fs::write(checked_in(), format!("{served}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(checked_in()).unwrap_or_default();
    assert!(
        served.trim_end() == committed.trim_end(),
        "docs/openapi.json differs from what the server serves; regenerate it with \
         QWEN3GUARD_BLESS=1 cargo test -p qwen3guard-server --test openapi"
    );
    let doc = reply.json();
    for path in [
        "/live",
        "/health",
        "/metrics",
        "/openapi.json",
        "/v1/moderations",
        "/v1/guard",
        "/v1/reward",
        "/get_reward",
        "/v1/stream/sessions",
        "/v1/stream/sessions/{id}",
        "/v1/stream/sessions/{id}/append",
        "/v1/stream/ws",
        "/v1/chat/completions",
        "/v1/models",
        "/beta/litellm_basic_guardrail_api",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    for schema in [
        "Native",
        "GenVerdict",
        "TokenVerdict",
        "Appended",
        "Rewards",
        "OpenRlhfRewards",
        "Detail",
        "ErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
}
