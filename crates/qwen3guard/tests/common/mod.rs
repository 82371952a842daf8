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

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh empty directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qwen3guard-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A copy of fixture `name` (files only) in a fresh directory.
    pub fn copy_of(name: &str) -> Self {
        let scratch = Scratch::new(name);
        for entry in std::fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), scratch.0.join(entry.file_name())).unwrap();
        }
        scratch
    }

    /// Path of `file` inside.
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
