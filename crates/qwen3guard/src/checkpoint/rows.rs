//! A weight matrix read from its checkpoint file one row at a time, when asked.
//!
//! An embedding table that no output projection shares (Stream's, or Gen's when
//! `tie_word_embeddings` is off) is only ever read a row per token. Keeping a converted
//! copy of it resident would cost a quarter of a 0.6B model for a few rows per request, so
//! the rows are read from the file instead: positioned reads into the operating system's
//! page cache, which keeps the rows in use warm and can drop the rest. Positioned reads,
//! not a memory map, so that a checkpoint file truncated under a running server is an
//! error on the request that reads it and never a crash.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::DType;

use crate::error::{Error, Result};

/// `(rows, cols)` values stored row-major in a file, widened to f32 as they are read.
#[derive(Debug, Clone)]
pub struct FileRows {
    path: PathBuf,
    file: Arc<File>,
    /// File offset of row 0.
    offset: u64,
    rows: usize,
    cols: usize,
    stored: DType,
    rounding: Rounding,
}

/// How read values are rounded: as the model's precision rounds its weights, so that a
/// lookup returns what a resident table in that precision would hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Kept as stored (f32 precision).
    Exact,
    /// To bf16.
    Bf16,
    /// Through a row of 8-bit weights ([`crate::kernels::q8::round_row`]).
    Q8,
}

impl FileRows {
    pub(super) fn new(
        path: PathBuf,
        file: Arc<File>,
        offset: u64,
        (rows, cols): (usize, usize),
        stored: DType,
        rounding: Rounding,
    ) -> Self {
        FileRows {
            path,
            file,
            offset,
            rows,
            cols,
            stored,
            rounding,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Appends rows `ids` to `out`, each widened to f32. An id past the last row is an
    /// error naming it.
    pub fn extend_rows(&self, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        let row_bytes = self.cols * self.stored.size_in_bytes();
        let mut bytes = vec![0u8; row_bytes];
        out.reserve(ids.len() * self.cols);
        for &id in ids {
            let row = id as usize;
            if row >= self.rows {
                return Err(Error::Tokenizer(format!(
                    "token id {id} is outside the embedding table of {} rows",
                    self.rows
                )));
            }
            let at = self.offset + (row * row_bytes) as u64;
            read_exact_at(&self.file, &mut bytes, at).map_err(|e| Error::io(&self.path, e))?;
            let widen = super::weights::element(&bytes, self.stored);
            let start = out.len();
            out.extend((0..self.cols).map(widen));
            let row = &mut out[start..];
            match self.rounding {
                Rounding::Exact => {}
                Rounding::Bf16 => row
                    .iter_mut()
                    .for_each(|v| *v = half::bf16::from_f32(*v).to_f32()),
                Rounding::Q8 => crate::kernels::q8::round_row(row),
            }
        }
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
