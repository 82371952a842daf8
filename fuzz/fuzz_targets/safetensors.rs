//! Reading weight files: arbitrary bytes as `model.safetensors` (and as an index) open
//! as weights or fail with an error, never a panic or an out-of-bounds read; every tensor
//! the header names can be asked for.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use qwen3guard::checkpoint::Weights;
use qwen3guard::{LoadOptions, Precision};

fn scratch() -> std::path::PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "qwen3guard-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed) % 4
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = data.split_first().unwrap_or((&0, &[]));
    let dir = scratch();
    if first % 2 == 0 {
        std::fs::write(dir.join("model.safetensors"), rest).unwrap();
    } else {
        // The bytes as an index naming shards, with a small valid shard beside it.
        std::fs::write(dir.join("model.safetensors.index.json"), rest).unwrap();
        std::fs::write(
            dir.join("a.safetensors"),
            b"\x02\x00\x00\x00\x00\x00\x00\x00{}",
        )
        .unwrap();
    }
    for precision in [Precision::F32, Precision::Q8] {
        if let Ok(weights) = Weights::open(&dir, &LoadOptions { precision }) {
            for name in ["model.embed_tokens.weight", "lm_head.weight", "x"] {
                if weights.contains(name) {
                    let _ = weights.get(name, &[1, 1]);
                    let _ = weights.get_rows(name, 1, 1);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
