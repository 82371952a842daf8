//! Profiling driver: `stream_timing DIR DTYPE LEN REPS [decode | batch N]` opens a Stream
//! session on LEN filler tokens REPS times (prefill); with `decode` it appends REPS single
//! tokens after LEN; with `batch N` it opens N sessions on LEN tokens and appends one token
//! to each of them REPS times as one `append_batch` (the server's step for N concurrent
//! sessions). Run it under `perf record`.
use qwen3guard::*;
use std::time::Instant;
#[path = "../src/alloc.rs"]
mod alloc;

fn main() {
    alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let precision: Precision = args[2].parse().expect("dtype");
    let len: usize = args[3].parse().expect("len");
    let reps: usize = args[4].parse().expect("reps");
    // Every mode reports a median of the repetitions, so it needs at least one.
    assert!(reps >= 1, "REPS must be at least 1");
    let decode = args.get(5).is_some_and(|a| a == "decode");
    let batch: Option<usize> =
        (args.get(5).is_some_and(|a| a == "batch")).then(|| args[6].parse().expect("batch size"));
    let ckpt = Checkpoint::open(dir).expect("checkpoint");
    let g = StreamGuard::load(&ckpt, &LoadOptions { precision }).expect("load");
    let ids: Vec<u32> = (0..len as u32)
        .map(|i| 1000 + (i * 7919) % 50_000)
        .collect();
    if let Some(n) = batch {
        let mut sessions: Vec<StreamSession> =
            (0..n).map(|_| g.open_ids(&ids).expect("open")).collect();
        let token: &[u32] = &[1000];
        let feeds = vec![token; n];
        let mut times = Vec::new();
        for _ in 0..reps {
            let mut refs: Vec<&mut StreamSession> = sessions.iter_mut().collect();
            let t = Instant::now();
            g.append_batch(&mut refs, &feeds).expect("append_batch");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        println!(
            "{n} sessions after {len}: step median {ms:.2} ms, {:.1} tokens/s",
            n as f64 / ms * 1000.0
        );
        return;
    }
    if decode {
        let mut s = g.open_ids(&ids).expect("open");
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            s.append(&[1000]).expect("append");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        // In order, so that a machine whose speed changes during the run shows it.
        let each: Vec<String> = times.iter().map(|t| format!("{t:.0}")).collect();
        eprintln!("each token (ms): {}", each.join(" "));
        times.sort_by(f64::total_cmp);
        println!(
            "token after {len}: median {:.2} ms (min {:.2}, max {:.2}, {reps} tokens)",
            times[times.len() / 2],
            times[0],
            times[reps - 1]
        );
        return;
    }
    for _ in 0..reps {
        let t = Instant::now();
        let _s = g.open_ids(&ids).expect("open");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        println!(
            "{len} tokens: {ms:.1} ms, {:.1} tok/s",
            len as f64 / ms * 1000.0
        );
    }
}
