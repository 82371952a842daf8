//! Tokenization that keeps message content from forging control tokens.
//!
//! The reference path (render the template, then tokenize the text) lets a message that
//! contains `<|im_end|>` close its own turn. Here every added token (`<|im_start|>`,
//! `<think>`, ...) that appears inside message content is first replaced by an escape
//! sequence of private-use characters; the template is rendered; the rendered text is split
//! at the added tokens that remain (they can only come from the template itself); and each
//! piece between them is unescaped and encoded by the tokenizer's normalizer,
//! pre-tokenizer and model alone, skipping its added vocabulary, so the text is byte-level
//! BPE like any other. For ordinary content this
//! is exactly what the reference tokenizer does (it also splits at added tokens first), so
//! the token ids are identical.

use std::path::Path;

use tokenizers::{
    Model, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, Tokenizer,
};

use crate::error::{Error, Result};

/// Starts an escape; doubled when it occurs in content itself.
const ESCAPE: char = '\u{E000}';
/// Marker `k` is escaped as `ESCAPE` followed by `MARKER_BASE + k`.
const MARKER_BASE: u32 = 0xE001;

/// One pre-tokenizer piece of a text and its token ids (see
/// [`PromptTokenizer::encode_text_pieces`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPiece {
    /// Where the piece lies in the encoded text, in bytes.
    pub bytes: std::ops::Range<usize>,
    /// Its tokens.
    pub ids: Vec<u32>,
}

/// The checkpoint's tokenizer, with its control tokens matched here rather than by it.
pub struct PromptTokenizer {
    /// Decodes everything; encodes text through its parts (see [`Self::encode_text`]), so
    /// that no second copy of its vocabulary (~30 MiB) is needed for text without
    /// control tokens.
    full: Tokenizer,
    /// Added tokens (content, id), longest first so that matching is leftmost-longest.
    markers: Vec<(String, u32)>,
    /// Bytes that start some added token; a cheap filter before matching.
    marker_starts: [bool; 256],
}

impl PromptTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let full = Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("cannot load {}: {e}", path.display())))?;
        crate::device::release_freed_memory();
        let mut markers: Vec<(String, u32)> = full
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, token)| (token.content, id))
            .collect();
        if markers.len() > (0xF8FF - MARKER_BASE) as usize {
            return Err(Error::Tokenizer(format!(
                "{}: too many added tokens ({})",
                path.display(),
                markers.len()
            )));
        }
        markers.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut marker_starts = [false; 256];
        for (text, _) in &markers {
            if let Some(&b) = text.as_bytes().first() {
                marker_starts[b as usize] = true;
            }
        }
        Ok(PromptTokenizer {
            full,
            markers,
            marker_starts,
        })
    }

    /// The id of a control token such as `<|im_end|>`.
    pub fn marker_id(&self, content: &str) -> Option<u32> {
        self.markers
            .iter()
            .find(|(text, _)| text == content)
            .map(|&(_, id)| id)
    }

    /// Replaces every added token in `content` by an escape, so that it survives rendering
    /// as text.
    pub fn escape(&self, content: &str) -> String {
        let mut out = String::with_capacity(content.len());
        let mut rest = content;
        while let Some(c) = rest.chars().next() {
            if c == ESCAPE {
                out.push(ESCAPE);
                out.push(ESCAPE);
                rest = &rest[c.len_utf8()..];
            } else if let Some(k) = self.marker_at(rest) {
                out.push(ESCAPE);
                out.push(marker_char(k));
                rest = &rest[self.markers[k].0.len()..];
            } else {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    /// Undoes [`Self::escape`].
    pub fn unescape(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != ESCAPE {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some(ESCAPE) => out.push(ESCAPE),
                Some(m) => match self
                    .markers
                    .get((m as u32).wrapping_sub(MARKER_BASE) as usize)
                {
                    Some((marker, _)) => out.push_str(marker),
                    None => {
                        out.push(ESCAPE);
                        out.push(m);
                    }
                },
                None => out.push(ESCAPE),
            }
        }
        out
    }

    /// Encodes a rendered template: added tokens in `rendered` are control tokens, escaped
    /// content is plain text.
    pub fn encode_rendered(&self, rendered: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut piece_start = 0;
        let mut pos = 0;
        while pos < rendered.len() {
            let rest = &rendered[pos..];
            if let Some(k) = self.marker_at(rest) {
                self.encode_piece(&rendered[piece_start..pos], &mut ids)?;
                ids.push(self.markers[k].1);
                pos += self.markers[k].0.len();
                piece_start = pos;
            } else {
                pos += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        self.encode_piece(&rendered[piece_start..], &mut ids)?;
        Ok(ids)
    }

    /// Encodes text with no control tokens at all: the tokenizer's own pipeline (normalize,
    /// pre-tokenize, BPE each piece) without the step that splits at added tokens.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .encode_text_pieces(text)?
            .into_iter()
            .flat_map(|piece| piece.ids)
            .collect())
    }

    /// Like [`Self::encode_text`], but split at the pre-tokenizer's pieces, each with the
    /// byte range of `text` it came from. BPE never merges across pieces, so a caller that
    /// receives text in parts (a streamed response) can tell which tokens are settled:
    /// those of pieces that more text can no longer change.
    pub fn encode_text_pieces(&self, text: &str) -> Result<Vec<TextPiece>> {
        let failed = |e| Error::Tokenizer(format!("cannot encode text: {e}"));
        let mut pieces = PreTokenizedString::from(text);
        if let Some(normalizer) = self.full.get_normalizer() {
            pieces
                .normalize(|piece| normalizer.normalize(piece))
                .map_err(failed)?;
        }
        if let Some(pre_tokenizer) = self.full.get_pre_tokenizer() {
            pre_tokenizer.pre_tokenize(&mut pieces).map_err(failed)?;
        }
        let model = self.full.get_model();
        pieces
            .tokenize(|piece| model.tokenize(piece.get()))
            .map_err(failed)?;
        Ok(pieces
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(_, (start, end), tokens)| TextPiece {
                bytes: start..end,
                ids: tokens.iter().flatten().map(|token| token.id).collect(),
            })
            .collect())
    }

    /// Whether cutting `text` at byte `at` and normalizing each part gives the
    /// normalization of the whole. NFC can reorder a run of combining marks and recompose
    /// the letter before them (`ã` then U+0323 becomes `ạ` then U+0303), so a piece
    /// boundary the pre-tokenizer reports after normalization can fall inside a change of
    /// the original text; text cut there and tokenized in parts would not give the whole's
    /// ids. `at` off a character boundary is never clean.
    pub fn normalizes_apart_at(&self, text: &str, at: usize) -> Result<bool> {
        let (Some(head), Some(tail)) = (text.get(..at), text.get(at..)) else {
            return Ok(false);
        };
        let Some(normalizer) = self.full.get_normalizer() else {
            return Ok(true);
        };
        let normalized = |part: &str| -> Result<String> {
            let mut part = NormalizedString::from(part);
            normalizer
                .normalize(&mut part)
                .map_err(|e| Error::Tokenizer(format!("cannot normalize text: {e}")))?;
            Ok(part.get().to_owned())
        };
        Ok(normalized(head)? + &normalized(tail)? == normalized(text)?)
    }

    /// Decodes ids to text; `skip_special` drops control tokens as the reference does.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.full
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer(format!("cannot decode ids: {e}")))
    }

    /// The text of one token (lossy for tokens that split a UTF-8 character).
    pub fn token_text(&self, id: u32) -> String {
        self.full.decode(&[id], false).unwrap_or_default()
    }

    fn encode_piece(&self, escaped: &str, ids: &mut Vec<u32>) -> Result<()> {
        if escaped.is_empty() {
            return Ok(());
        }
        ids.extend(self.encode_text(&self.unescape(escaped))?);
        Ok(())
    }

    fn marker_at(&self, text: &str) -> Option<usize> {
        let first = *text.as_bytes().first()?;
        if !self.marker_starts[first as usize] {
            return None;
        }
        self.markers
            .iter()
            .position(|(m, _)| text.starts_with(m.as_str()))
    }
}

fn marker_char(k: usize) -> char {
    // In range by the check in `from_file`.
    char::from_u32(MARKER_BASE + k as u32).unwrap_or(ESCAPE)
}
