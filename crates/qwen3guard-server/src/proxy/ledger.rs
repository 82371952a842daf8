//! What the upstream sent and how much of it the client may see.
//!
//! The guard judges one text: the answer's reasoning and content in the order they
//! arrive (with [`SEPARATOR`] where the content starts after reasoning). Positions here
//! are characters of that text. Each upstream chunk covers a range of it; [`Ledger`] keeps
//! the chunks not yet sent and releases them up to a position: whole when they end before
//! it (sent exactly as the upstream made them), split when it falls inside one (the part
//! before goes now, the rest waits). Chunks that end the answer (a `finish_reason`) wait
//! for [`Ledger::finish`], the final verdict.

use std::collections::VecDeque;

use serde_json::Value;

use super::chat::{delta_texts, set_choice_field, set_delta_texts};

/// Put between reasoning and content in the judged text, as the chat template puts the
/// end of thinking there.
pub const SEPARATOR: &str = "\n\n";

struct Queued {
    chunk: Value,
    start: usize,
    reasoning: String,
    sep: usize,
    content: String,
    finish: bool,
}

impl Queued {
    fn len(&self) -> usize {
        self.reasoning.chars().count() + self.sep + self.content.chars().count()
    }

    /// Splits off the first `k` characters (0 < k < len) as a chunk to send now.
    fn split(&mut self, k: usize) -> Value {
        let r = self.reasoning.chars().count();
        let head_r = k.min(r);
        let after = k - head_r;
        let head_sep = after.min(self.sep);
        let head_c = after - head_sep;
        let (hr, rr) = split_chars(&self.reasoning, head_r);
        let (hc, rc) = split_chars(&self.content, head_c);
        let mut head = self.chunk.clone();
        set_delta_texts(
            &mut head,
            (!self.reasoning.is_empty()).then_some(hr.as_str()),
            (!self.content.is_empty()).then_some(hc.as_str()),
        );
        // Per-token data belongs with the chunk's last part.
        set_choice_field(&mut head, "logprobs", Value::Null);
        set_delta_texts(
            &mut self.chunk,
            (!self.reasoning.is_empty()).then_some(rr.as_str()),
            (!self.content.is_empty()).then_some(rc.as_str()),
        );
        if let Some(delta) = self
            .chunk
            .pointer_mut("/choices/0/delta")
            .and_then(Value::as_object_mut)
        {
            delta.remove("role");
        }
        self.start += k;
        self.sep -= head_sep;
        self.reasoning = rr;
        self.content = rc;
        head
    }
}

fn split_chars(text: &str, k: usize) -> (String, String) {
    let at = text.char_indices().nth(k).map_or(text.len(), |(b, _)| b);
    (text[..at].to_string(), text[at..].to_string())
}

/// A part of the judged text that came from one field.
struct Segment {
    start: usize,
    content: bool,
    text: String,
}

/// The chunks received and what of them has been sent.
#[derive(Default)]
pub struct Ledger {
    queue: VecDeque<Queued>,
    judged: String,
    end: usize,
    released: usize,
    segments: Vec<Segment>,
    seen_reasoning: bool,
    seen_content: bool,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an upstream chunk; returns the text it adds to the judged text.
    pub fn push(&mut self, chunk: Value) -> String {
        let (reasoning, content) = delta_texts(&chunk);
        let (reasoning, content) = (reasoning.to_string(), content.to_string());
        let sep = if !content.is_empty() && self.seen_reasoning && !self.seen_content {
            SEPARATOR
        } else {
            ""
        };
        self.seen_reasoning |= !reasoning.is_empty();
        self.seen_content |= !content.is_empty();
        let start = self.end;
        let text = format!("{reasoning}{sep}{content}");
        for (is_content, part, at) in [
            (false, &reasoning, start),
            (
                true,
                &content,
                start + reasoning.chars().count() + sep.len(),
            ),
        ] {
            if !part.is_empty() {
                self.segments.push(Segment {
                    start: at,
                    content: is_content,
                    text: part.clone(),
                });
            }
        }
        self.judged.push_str(&text);
        self.end += text.chars().count();
        self.queue.push_back(Queued {
            finish: super::chat::finish_reason(&chunk).is_some(),
            chunk,
            start,
            reasoning,
            sep: sep.len(),
            content,
        });
        text
    }

    /// Characters of judged text received.
    pub fn end(&self) -> usize {
        self.end
    }

    /// Characters of judged text sent to the client.
    pub fn released(&self) -> usize {
        self.released
    }

    /// The chunks to send so that the client has the text up to `upto` (no further), in
    /// order; a chunk ending the answer waits for [`Self::finish`].
    pub fn release(&mut self, upto: usize) -> Vec<Value> {
        self.release_inner(upto.min(self.end), false)
    }

    /// Everything still queued: the answer is judged whole and allowed.
    pub fn finish(&mut self) -> Vec<Value> {
        self.release_inner(self.end, true)
    }

    fn release_inner(&mut self, upto: usize, finish: bool) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(front) = self.queue.front_mut() {
            if front.finish && !finish {
                break;
            }
            let end = front.start + front.len();
            if end <= upto {
                self.released = self.released.max(end);
                if let Some(q) = self.queue.pop_front() {
                    out.push(q.chunk);
                }
                continue;
            }
            if front.start < upto {
                out.push(front.split(upto - front.start));
                self.released = self.released.max(upto);
            }
            break;
        }
        out
    }

    /// Sends the text before `at` and drops everything after: the answer stops there.
    pub fn cut(&mut self, at: usize) -> Vec<Value> {
        let out = self.release(at);
        self.queue.clear();
        out
    }

    /// [`Self::cut`], and forgets the text after `at`, so that a new answer continues
    /// from it (an intervention's rollback).
    pub fn rollback(&mut self, at: usize) -> Vec<Value> {
        let out = self.cut(at);
        let at = at.min(self.end);
        let byte = self
            .judged
            .char_indices()
            .nth(at)
            .map_or(self.judged.len(), |(b, _)| b);
        self.judged.truncate(byte);
        self.end = at;
        self.segments.retain(|s| s.start < at);
        for s in &mut self.segments {
            let (keep, _) = split_chars(&s.text, at - s.start);
            s.text = keep;
        }
        self.seen_reasoning = self.segments.iter().any(|s| !s.content);
        self.seen_content = self.segments.iter().any(|s| s.content);
        out
    }

    /// The judged text before `at`.
    pub fn judged_before(&self, at: usize) -> String {
        split_chars(&self.judged, at).0
    }

    /// The content (`content: true`) or reasoning text before position `at`.
    pub fn field_before(&self, at: usize, content: bool) -> String {
        self.segments
            .iter()
            .filter(|s| s.content == content && s.start < at)
            .map(|s| split_chars(&s.text, at - s.start).0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(content: &str) -> Value {
        json!({"id": "c", "choices": [{"index": 0, "delta": {"content": content}, "logprobs": {"x": 1}}]})
    }

    fn content_of(chunks: &[Value]) -> String {
        chunks.iter().map(|c| delta_texts(c).1).collect()
    }

    #[test]
    fn release_sends_exactly_up_to_the_point_whole_chunks_unchanged() {
        let mut ledger = Ledger::new();
        for piece in ["Hello", " wor", "ld, héllo"] {
            ledger.push(chunk(piece));
        }
        let first = ledger.release(5);
        assert_eq!(first, vec![chunk("Hello")]);
        let second = ledger.release(11);
        assert_eq!(content_of(&second), " world");
        // The split part carries no per-token data; the rest keeps it.
        assert_eq!(second[1]["choices"][0]["logprobs"], Value::Null);
        assert_eq!(ledger.released(), 11);
        assert!(ledger.release(8).is_empty());
        let rest = ledger.finish();
        assert_eq!(content_of(&rest), ", héllo");
        assert_eq!(rest[0]["choices"][0]["logprobs"], json!({"x": 1}));
    }

    #[test]
    fn the_finishing_chunk_waits_for_the_verdict() {
        let mut ledger = Ledger::new();
        ledger.push(chunk("Hi"));
        let mut last = chunk("!");
        last["choices"][0]["finish_reason"] = json!("stop");
        ledger.push(last);
        ledger.push(json!({"choices": [], "usage": {"total_tokens": 3}}));
        assert_eq!(content_of(&ledger.release(100)), "Hi");
        let rest = ledger.finish();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[1]["usage"]["total_tokens"], 3);
    }

    #[test]
    fn reasoning_and_content_map_to_their_fields() {
        let mut ledger = Ledger::new();
        let think = json!({"choices": [{"index": 0, "delta": {"reasoning_content": "Hmm."}}]});
        assert_eq!(ledger.push(think), "Hmm.");
        assert_eq!(ledger.push(chunk("Yes, no.")), "\n\nYes, no.");
        assert_eq!(ledger.end(), 14);
        assert_eq!(ledger.field_before(11, true), "Yes, ");
        assert_eq!(ledger.field_before(11, false), "Hmm.");
        assert_eq!(ledger.judged_before(6), "Hmm.\n\n");
        let sent = ledger.rollback(11);
        assert_eq!(content_of(&sent), "Yes, ");
        assert_eq!(ledger.end(), 11);
        // The continuation is content after content: no second separator.
        assert_eq!(ledger.push(chunk("sure.")), "sure.");
        assert_eq!(ledger.field_before(100, true), "Yes, sure.");
    }

    #[test]
    fn a_cut_drops_the_rest() {
        let mut ledger = Ledger::new();
        ledger.push(chunk("abc def"));
        assert_eq!(content_of(&ledger.cut(4)), "abc ");
        assert!(ledger.finish().is_empty());
    }
}
