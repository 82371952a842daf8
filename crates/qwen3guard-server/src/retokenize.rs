//! Incremental re-tokenization of a streamed text.
//!
//! Text arrives in deltas cut anywhere (inside a word, inside a multi-byte character). A
//! token is fed to the model only once no later text can change it: the text not yet
//! settled is re-tokenized on every delta, and the tokens of its last [`HELD_PIECES`]
//! pre-tokenizer pieces are held back (the Qwen pre-tokenizer looks at most one character
//! ahead, and NFC composition only joins a character to the one before it, so the pieces
//! before those cannot change), and so is a piece whose start NFC changes together with
//! the text before it (a run of combining marks reordered across the boundary). A push
//! marked `last` releases the rest. The ids fed, whatever the
//! cuts, are those of tokenizing the whole text at once (property-tested).

use qwen3guard::prompt::PromptTokenizer;

use crate::http::AppError;

/// Trailing pieces whose tokens are held back until more text (or the end) arrives.
const HELD_PIECES: usize = 2;

/// The most text (bytes) held back at once. A run with no piece boundary (letters with no
/// space or punctuation) stays one piece however long it grows, so without a bound it
/// would never be judged before the end, cost a re-tokenization of all of it on every
/// delta (quadratic in its length), and escape the session's token cap, which counts only
/// settled tokens. 16 KiB is far beyond any word of a natural language.
pub const MAX_HELD_BYTES: usize = 16 << 10;

/// Tokens that became settled, with the character offset (from the start of the whole
/// text) of the pre-tokenizer piece each belongs to. A piece is about a word: its tokens
/// all start at or after that offset, and no earlier text belongs to them, which is what a
/// caller releasing or withholding text around a token needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The token ids, in order.
    pub ids: Vec<u32>,
    /// For each id, where its piece starts, in characters.
    pub starts: Vec<usize>,
}

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
        Ok(self.push_located(tokenizer, bytes, last)?.ids)
    }

    /// [`Self::push`], also telling where in the text each settled token's piece starts.
    pub fn push_located(
        &mut self,
        tokenizer: &PromptTokenizer,
        bytes: &[u8],
        last: bool,
    ) -> Result<Settled, AppError> {
        // What to go back to if this delta is refused: `pending` only grows below.
        let (pending_before, partial_before) = (self.pending.len(), self.partial.clone());
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
        let mut release = if last {
            pieces.len()
        } else {
            pieces.len().saturating_sub(HELD_PIECES)
        };
        // A boundary inside a normalization change is no place to cut: hold that piece too.
        while let Some(piece) = pieces.get(release).filter(|_| release > 0) {
            if tokenizer.normalizes_apart_at(&self.pending, piece.bytes.start)? {
                break;
            }
            release -= 1;
        }
        let cut = match pieces.get(release) {
            Some(piece) => piece.bytes.start,
            None => self.pending.len(),
        };
        let held = self.pending.len() - cut.min(self.pending.len());
        if held > MAX_HELD_BYTES {
            let chars = self.pending[cut.min(self.pending.len())..].chars().count();
            self.pending.truncate(pending_before);
            self.partial = partial_before;
            return Err(AppError::TooLarge(format!(
                "the text would hold {chars} characters back without a word boundary (a space \
                 or punctuation), more than {MAX_HELD_BYTES} bytes: the guard judges text piece \
                 by piece, and a piece that long could not be judged before the end"
            )));
        }
        let mut settled = Settled::default();
        let (mut chars, mut counted) = (self.settled_chars, 0);
        for piece in &pieces[..release] {
            // Offsets fall on character boundaries; `get` keeps a bad one from panicking.
            chars += self
                .pending
                .get(counted..piece.bytes.start)
                .map_or(0, |s| s.chars().count());
            counted = counted.max(piece.bytes.start);
            settled.ids.extend_from_slice(&piece.ids);
            settled
                .starts
                .extend(std::iter::repeat_n(chars, piece.ids.len()));
        }
        // Piece offsets fall on character boundaries of `pending`; guard anyway.
        let cut = (0..=cut)
            .rev()
            .find(|&c| self.pending.is_char_boundary(c))
            .unwrap_or(0);
        self.settled_chars += self.pending[..cut].chars().count();
        self.pending.drain(..cut);
        Ok(settled)
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
