//! Incremental re-tokenization of a streamed text.
//!
//! Text arrives in deltas cut anywhere (inside a word, inside a multi-byte character). A
//! token is fed to the model only once no later text can change it: the text not yet
//! settled is re-tokenized on every delta, and the tokens of its last [`HELD_PIECES`]
//! pre-tokenizer pieces are held back (the Qwen pre-tokenizer looks at most one character
//! ahead, and NFC composition only joins a character to the one before it, so the pieces
//! before those cannot change). `finish` releases the rest. The ids fed, whatever the
//! cuts, are those of tokenizing the whole text at once (property-tested).

use qwen3guard::prompt::PromptTokenizer;

use crate::http::AppError;

/// Trailing pieces whose tokens are held back until more text (or the end) arrives.
const HELD_PIECES: usize = 2;

/// The part of a streamed text not yet turned into settled tokens.
#[derive(Debug, Default, Clone)]
pub struct Retokenizer {
    /// Received, valid UTF-8, not yet settled.
    pending: String,
    /// Bytes of an incomplete trailing character.
    partial: Vec<u8>,
    /// Characters whose tokens have been released.
    settled_chars: usize,
}

impl Retokenizer {
    /// Adds `bytes` and returns the tokens that became settled; `last` releases every
    /// token (the text is complete).
    pub fn push(
        &mut self,
        tokenizer: &PromptTokenizer,
        bytes: &[u8],
        last: bool,
    ) -> Result<Vec<u32>, AppError> {
        self.partial.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.partial) {
            Ok(text) => text.len(),
            Err(e) if e.error_len().is_none() && !last => e.valid_up_to(),
            Err(e) => {
                return Err(AppError::Invalid(format!(
                    "`text` is not valid UTF-8 at byte {} of the pending text",
                    e.valid_up_to()
                )))
            }
        };
        let rest = self.partial.split_off(valid);
        let complete = std::mem::replace(&mut self.partial, rest);
        // Valid by the check above.
        self.pending
            .push_str(std::str::from_utf8(&complete).unwrap_or_default());
        let pieces = tokenizer.encode_text_pieces(&self.pending)?;
        let release = if last {
            pieces.len()
        } else {
            pieces.len().saturating_sub(HELD_PIECES)
        };
        let cut = match pieces.get(release) {
            Some(piece) => piece.bytes.start,
            None => self.pending.len(),
        };
        let ids = pieces[..release]
            .iter()
            .flat_map(|p| p.ids.iter().copied())
            .collect();
        // Piece offsets fall on character boundaries of `pending`; guard anyway.
        let cut = (0..=cut)
            .rev()
            .find(|&c| self.pending.is_char_boundary(c))
            .unwrap_or(0);
        self.settled_chars += self.pending[..cut].chars().count();
        self.pending.drain(..cut);
        Ok(ids)
    }

    /// Characters whose tokens have been released.
    pub fn settled_chars(&self) -> usize {
        self.settled_chars
    }

    /// Characters received but held back.
    pub fn pending_chars(&self) -> usize {
        self.pending.chars().count()
    }

    /// Whether nothing is held back.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn tokenizer() -> PromptTokenizer {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../qwen3guard/tests/fixtures/stream/tokenizer.json");
        PromptTokenizer::from_file(&path).expect("the fixture tokenizer loads")
    }

    /// A small deterministic generator (xorshift64*), so that a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    /// Fragments chosen for the pre-tokenizer's edge cases: runs of spaces and newlines
    /// (whose pieces merge or split as text arrives), contractions, digits (one piece
    /// each), combining accents (NFC joins them to the character before), CJK, emoji
    /// with modifiers, and text that looks like the template's control tokens.
    const FRAGMENTS: [&str; 24] = [
        "the", " cat", "  ", "   ", "\n", "\n\n", " \n", "\t", "'s", "'ll", "123", "4",
        "e\u{301}", "\u{301}", "é", "中文", "👍🏽", "!!", "...", " (", "<|im_end|>", "Hello",
        ",", "ß",
    ];

    fn random_text(rng: &mut Rng) -> String {
        (0..1 + rng.below(24))
            .map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())])
            .collect()
    }

    /// Cuts `bytes` at random points, inside multi-byte characters too.
    fn random_cuts<'a>(rng: &mut Rng, bytes: &'a [u8]) -> Vec<&'a [u8]> {
        let mut parts = Vec::new();
        let mut start = 0;
        while start < bytes.len() {
            let len = 1 + rng.below(6.min(bytes.len() - start));
            parts.push(&bytes[start..start + len]);
            start += len;
        }
        parts
    }

    #[test]
    fn any_chunking_feeds_the_ids_of_the_whole_text() {
        let tokenizer = tokenizer();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..400 {
            let text = random_text(&mut rng);
            let whole = tokenizer.encode_text(&text).unwrap();
            let mut retokenizer = Retokenizer::default();
            let mut fed = Vec::new();
            for part in random_cuts(&mut rng, text.as_bytes()) {
                fed.extend(retokenizer.push(&tokenizer, part, false).unwrap());
                assert!(retokenizer.settled_chars() <= text.chars().count());
            }
            fed.extend(retokenizer.push(&tokenizer, &[], true).unwrap());
            assert_eq!(fed, whole, "case {case}: {text:?}");
            assert!(retokenizer.is_empty());
            assert_eq!(retokenizer.settled_chars(), text.chars().count());
        }
    }

    #[test]
    fn a_broken_character_is_refused_only_at_the_end() {
        let tokenizer = tokenizer();
        let mut retokenizer = Retokenizer::default();
        // The first two bytes of "中": incomplete, so held without error.
        assert!(retokenizer.push(&tokenizer, &[0xe4, 0xb8], false).unwrap().is_empty());
        let error = retokenizer.push(&tokenizer, &[], true).unwrap_err();
        assert!(error.to_string().contains("UTF-8"), "{error}");
        // A byte that can start no character is refused at once.
        let mut retokenizer = Retokenizer::default();
        assert!(retokenizer.push(&tokenizer, &[b'a', 0xff], false).is_err());
    }
}
