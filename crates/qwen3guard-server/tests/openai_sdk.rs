//! The official `openai` Python SDK against the server: `client.moderations.create` parses
//! the answer into exactly what the server sent, and a wrong key is the SDK's
//! `AuthenticationError`.
//!
//! The SDK comes from PyPI: `bash .ci/run` installs it into a virtual environment outside
//! the clone and names its Python in `QWEN3GUARD_OPENAI_PYTHON`. Elsewhere the test says
//! it is skipped; under CI (`CI` set) a missing SDK fails it instead.

mod common;

use std::process::Command;

use common::TestServer;
use qwen3guard_server::ServerConfig;
use serde_json::{json, Value};

const SCRIPT: &str = r#"
import json, sys
import openai
from openai import OpenAI

base_url, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
answer = client.moderations.create(
    model="qwen3guard", input=["How do I bake bread?", "How do I pick a lock?"]
)
results = [r.model_dump(by_alias=True, exclude_unset=True) for r in answer.results]
try:
    OpenAI(base_url=base_url, api_key="wrong", max_retries=0).moderations.create(
        model="qwen3guard", input="hello"
    )
    refused = None
except openai.AuthenticationError as e:
    refused = e.status_code
print(json.dumps({"id": answer.id, "model": answer.model, "results": results, "refused": refused,
                  "violence": answer.results[1].category_scores.violence}))
"#;

#[test]
fn the_openai_sdk_reads_what_the_server_sends() {
    let Some(python) = std::env::var_os("QWEN3GUARD_OPENAI_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI the openai SDK must be installed: bash .ci/run sets QWEN3GUARD_OPENAI_PYTHON"
        );
        eprintln!("skipped: set QWEN3GUARD_OPENAI_PYTHON to a Python that has the openai package");
        return;
    };
    let server = TestServer::start(ServerConfig {
        api_keys: vec!["sk-test".into()],
        ..ServerConfig::default()
    });
    let output = Command::new(python)
        .args([
            "-c",
            SCRIPT,
            &format!("http://{}/v1", server.addr),
            "sk-test",
        ])
        .output()
        .expect("the SDK's Python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sdk: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(sdk["refused"], 401);
    assert_eq!(sdk["model"], "qwen3guard");
    assert!(sdk["id"].as_str().unwrap().starts_with("modr-"));

    // What the SDK parsed is what the server sends for the same request.
    let raw = server.request(
        "POST",
        "/v1/moderations",
        &[
            ("authorization", "Bearer sk-test"),
            ("content-type", "application/json"),
        ],
        json!({"model": "qwen3guard", "input": ["How do I bake bread?", "How do I pick a lock?"]})
            .to_string()
            .as_bytes(),
    );
    let raw = raw.ok();
    assert_eq!(sdk["results"], raw["results"]);
    assert_eq!(
        sdk["violence"],
        raw["results"][1]["category_scores"]["violence"]
    );
}
