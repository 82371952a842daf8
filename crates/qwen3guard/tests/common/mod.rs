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

/// One step of a "largest difference so far" fold that keeps a NaN once it has seen one.
///
/// `f32::max` returns the other operand when one is NaN, so folding differences with it
/// silently drops a NaN output and the tolerance check after it passes; here a NaN wins,
/// and every comparison against the tolerance then fails.
pub fn nan_max(worst: f32, difference: f32) -> f32 {
    if difference.is_nan() || difference > worst {
        difference
    } else {
        worst
    }
}

/// The largest absolute element-wise difference of `a` and `b` (same length), NaN when
/// any difference is NaN (a NaN on either side, or infinities of the same sign).
pub fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, nan_max)
}

/// Whether `a` and `b` agree element-wise within `tolerance`; the reason when not.
///
/// The comparison is written `worst <= tolerance` so that a NaN `worst` fails it.
pub fn check_close(what: &str, a: &[f32], b: &[f32], tolerance: f32) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!(
            "{what}: lengths differ ({} vs {})",
            a.len(),
            b.len()
        ));
    }
    let worst = max_abs_difference(a, b);
    if worst <= tolerance {
        Ok(())
    } else {
        Err(format!(
            "{what}: max abs difference {worst} exceeds {tolerance}\n  ours: {a:?}\n  ref:  {b:?}"
        ))
    }
}

/// Asserts `a` and `b` agree element-wise within [`TOLERANCE`] (a NaN anywhere fails).
pub fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    if let Err(reason) = check_close(what, a, b, TOLERANCE) {
        panic!("{reason}");
    }
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
