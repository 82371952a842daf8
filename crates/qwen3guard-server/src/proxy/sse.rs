//! Server-sent events, both ways: the upstream's `text/event-stream` bytes into event
//! payloads, cut anywhere (inside a line, inside a `\r\n`), and our payloads into frames.
//!
//! Only what OpenAI-compatible servers use is kept: `data:` lines (joined with `\n` when
//! an event has several), events ending at a blank line, `:` comments ignored (llama.cpp
//! and others send them as keep-alives), other fields ignored.

use axum::body::Bytes;

/// The longest line accepted: a server that never ends a line must not grow the buffer
/// without bound.
pub const MAX_LINE: usize = 8 << 20;

/// Why the bytes are not an event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line longer than [`MAX_LINE`].
    #[error("an event-stream line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// A line that is not UTF-8.
    #[error("an event-stream line is not valid UTF-8")]
    NotUtf8,
}

/// An incremental parser of an event stream.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
    /// The last byte seen was a `\r` that ended a line: a `\n` right after it belongs to it.
    after_cr: bool,
}

impl SseParser {
    /// Feeds `bytes`; returns the payloads of the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    let line = String::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
                    if let Some(event) = self.line_done(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(events)
    }

    /// The end of the stream: an event whose blank line never came, if any.
    pub fn finish(&mut self) -> Result<Option<String>, SseError> {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        let event = self.line_done(&line);
        Ok(event.or_else(|| self.data.take()))
    }

    fn line_done(&mut self, line: &str) -> Option<String> {
        if line.is_empty() {
            return self.data.take();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        None
    }
}

/// One `data:` frame.
pub fn frame(payload: &str) -> Bytes {
    Bytes::from(format!("data: {payload}\n\n"))
}

/// The frame that ends an OpenAI stream.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(text: &str, size: usize) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for piece in text.as_bytes().chunks(size) {
            events.extend(parser.push(piece).unwrap());
        }
        events.extend(parser.finish().unwrap());
        events
    }

    #[test]
    fn events_are_the_same_whatever_the_cuts() {
        let text = ": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: one\ndata:two\n\ndata: [DONE]\n\n";
        let expected = vec!["{\"a\":1}", "one\ntwo", "[DONE]"];
        for size in 1..=text.len() {
            assert_eq!(parse_in_pieces(text, size), expected, "pieces of {size}");
        }
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_kept() {
        assert_eq!(parse_in_pieces("data: x", 3), vec!["x"]);
        assert_eq!(parse_in_pieces("data: x\n", 3), vec!["x"]);
        assert!(parse_in_pieces(": only a comment", 2).is_empty());
    }

    #[test]
    fn bad_streams_are_refused() {
        let mut parser = SseParser::default();
        assert_eq!(parser.push(b"data: \xff\n"), Err(SseError::NotUtf8));
        let mut parser = SseParser::default();
        let long = vec![b'a'; MAX_LINE + 1];
        assert_eq!(parser.push(&long), Err(SseError::LineTooLong));
    }

    #[test]
    fn frames_parse_back() {
        let mut parser = SseParser::default();
        let mut bytes = frame("{\"b\":2}").to_vec();
        bytes.extend_from_slice(&done());
        assert_eq!(parser.push(&bytes).unwrap(), vec!["{\"b\":2}", "[DONE]"]);
    }
}
