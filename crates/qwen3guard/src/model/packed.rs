//! Weight matrices in a compact format with their own CPU product kernel.
//!
//! candle's CPU backend multiplies f32 (and f16) only. The reduced-precision options keep
//! their matrices here instead: bf16 ([`Bf16Matrix`]) or 8-bit ([`Q8Matrix`]). Activations
//! stay f32 between products.

use crate::model::{Bf16Matrix, Q8Matrix};

/// A `(rows, cols)` weight matrix in one of the compact formats.
#[derive(Debug)]
pub enum PackedMatrix {
    /// bfloat16, multiplied with the bf16 dot-product instruction.
    Bf16(Bf16Matrix),
    /// int8 per row, multiplied with the VNNI byte dot-product instruction.
    Q8(Q8Matrix),
}

impl PackedMatrix {
    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        match self {
            PackedMatrix::Bf16(m) => m.rows(),
            PackedMatrix::Q8(m) => m.rows(),
        }
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        match self {
            PackedMatrix::Bf16(m) => m.cols(),
            PackedMatrix::Q8(m) => m.cols(),
        }
    }

    /// Row `r` widened to f32 (an embedding lookup), appended to `out`.
    pub fn extend_row(&self, r: usize, out: &mut Vec<f32>) {
        match self {
            PackedMatrix::Bf16(m) => out.extend(m.row_f32(r)),
            PackedMatrix::Q8(m) => out.extend(m.row_f32(r)),
        }
    }

    /// `x (m, cols) @ self^T -> (m, rows)`, row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        match self {
            PackedMatrix::Bf16(w) => w.matmul(x, m),
            PackedMatrix::Q8(w) => w.matmul(x, m),
        }
    }
}
