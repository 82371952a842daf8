//! Shared helpers for the integration tests: fixture paths, reference files, tolerances.
#![allow(dead_code)]

use std::path::PathBuf;

use qwen3guard::{Conversation, Message};
use serde::Deserialize;

/// Largest absolute difference accepted against the f32 reference.
pub const TOLERANCE: f32 = 1e-4;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// Parses `tests/fixtures/reference/<name>.json`.
pub fn reference<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = fixture("reference").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("reference file is committed");
    serde_json::from_str(&text).expect("reference file parses")
}

/// A conversation from reference messages.
pub fn conversation(messages: &[Message]) -> Conversation {
    Conversation::new(messages.to_vec()).expect("reference conversations are valid")
}

/// Asserts `a` and `b` agree element-wise within [`TOLERANCE`].
pub fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= TOLERANCE,
        "{what}: max abs difference {worst} exceeds {TOLERANCE}\n  ours: {a:?}\n  ref:  {b:?}"
    );
}
