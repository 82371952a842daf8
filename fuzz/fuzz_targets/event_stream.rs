//! The proxy's reading of an upstream's event stream: whatever the bytes, the parser
//! returns events or a reason, never panics, and gives the same events whether the bytes
//! arrive at once or cut at any two points (the first two input bytes choose the cuts).
//! Each event that is JSON then goes through the ledger, released up to arbitrary
//! points: in the end every text is sent once, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qwen3guard_server::proxy::chat::delta_texts;
use qwen3guard_server::proxy::ledger::Ledger;
use qwen3guard_server::proxy::sse::SseParser;

fn parse(parts: &[&[u8]]) -> Result<Vec<String>, qwen3guard_server::proxy::sse::SseError> {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    for part in parts {
        events.extend(parser.push(part)?);
    }
    events.extend(parser.finish()?);
    Ok(events)
}

fuzz_target!(|data: &[u8]| {
    let (a, b, body) = match data {
        [a, b, rest @ ..] => (*a as usize, *b as usize, rest),
        _ => return,
    };
    let whole = parse(&[body]);
    let (i, j) = (a % (body.len() + 1), b % (body.len() + 1));
    let (i, j) = (i.min(j), i.max(j));
    let cut = parse(&[&body[..i], &body[i..j], &body[j..]]);
    assert_eq!(whole.is_ok(), cut.is_ok());
    let Ok(events) = whole else { return };
    assert_eq!(Some(&events), cut.as_ref().ok());
    let mut ledger = Ledger::new();
    let mut received = String::new();
    let mut sent = String::new();
    for (k, event) in events.iter().enumerate() {
        let Ok(chunk) = serde_json::from_str(event) else { continue };
        let (reasoning, content) = delta_texts(&chunk);
        received.push_str(reasoning);
        received.push_str(content);
        ledger.push(chunk);
        let point = (a * 7 + b * 13 + k * 31) % (ledger.end() + 2);
        for released in ledger.release(point) {
            let (reasoning, content) = delta_texts(&released);
            sent.push_str(reasoning);
            sent.push_str(content);
        }
    }
    for released in ledger.finish() {
        let (reasoning, content) = delta_texts(&released);
        sent.push_str(reasoning);
        sent.push_str(content);
    }
    // Every text sent once, in order, whatever the release points.
    assert_eq!(sent, received);
});
