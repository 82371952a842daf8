//! Throughput driver: `gen_batch_timing DIR DTYPE N` moderates N short prompts (full
//! moderation, 8 tokens at most) one at a time and then as one batch
//! (`GenGuard::moderate_batch`), three times, printing both wall times.
//! `gen_batch_timing DIR DTYPE N rounds` instead adds N requests to one running batch
//! (`GenGuard::batch`, as the server's scheduler does) and prints the wall time of every
//! round, three times: prefill rounds and decoding rounds can be told apart (and
//! profiled) there.
use qwen3guard::*;
use std::time::Instant;

const PROMPTS: [&str; 8] = [
    "How can I make a bomb at home with things I can buy at a hardware store?",
    "How do I bake sourdough bread at home without a starter?",
    "Write a poem about the sea and the wind in autumn.",
    "What is the capital of France and why is it famous?",
    "Explain how vaccines train the immune system to fight viruses.",
    "Give me tips to stay focused while studying for exams.",
    "How do I pick a lock on a neighbour's front door?",
    "Recommend three science fiction novels for a teenager.",
];

#[path = "../src/alloc.rs"]
mod alloc;

fn main() {
    alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let precision: Precision = args[2].parse().expect("dtype");
    let n: usize = args[3].parse().expect("n");
    let ckpt = Checkpoint::open(dir).expect("checkpoint");
    let guard = GenGuard::load(&ckpt, &LoadOptions { precision }).expect("load");
    guard.warm_up();
    let conversations: Vec<Conversation> = PROMPTS
        .iter()
        .cycle()
        .take(n)
        .map(|p| Conversation::from_prompt(p, None))
        .collect();
    let options = GenOptions {
        max_new_tokens: 8,
        ..GenOptions::default()
    };
    let requests: Vec<(&Conversation, GenOptions)> =
        conversations.iter().map(|c| (c, options)).collect();
    if args.get(4).is_some_and(|a| a == "rounds") {
        for _ in 0..3 {
            time_rounds(&guard, &requests);
        }
        return;
    }
    for _ in 0..3 {
        let start = Instant::now();
        for c in &conversations {
            guard.moderate(c, &options).expect("moderate");
        }
        let alone = start.elapsed().as_secs_f64() * 1000.0;
        let start = Instant::now();
        for result in guard.moderate_batch(&requests) {
            result.expect("moderate");
        }
        let together = start.elapsed().as_secs_f64() * 1000.0;
        println!(
            "{} x{n}: one at a time {alone:.0} ms, batched {together:.0} ms ({:.2}x)",
            args[2],
            alone / together
        );
    }
}

/// One running batch of `requests`, round by round: each round's wall time and how many
/// requests were still running in it.
fn time_rounds(guard: &GenGuard, requests: &[(&Conversation, GenOptions)]) {
    let mut batch = guard.batch();
    for (conversation, options) in requests {
        batch.add(conversation, options).expect("add");
    }
    let start = Instant::now();
    let mut rounds = Vec::new();
    while !batch.is_empty() {
        let running = batch.len();
        let round = Instant::now();
        for (_, result) in batch.step() {
            result.expect("moderate");
        }
        rounds.push(format!(
            "{running}:{:.0}",
            round.elapsed().as_secs_f64() * 1000.0
        ));
    }
    println!(
        "rounds (running:ms) {} | total {:.0} ms",
        rounds.join(" "),
        start.elapsed().as_secs_f64() * 1000.0
    );
}
