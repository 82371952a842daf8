//! f32 weight matrices with an AVX-512 product kernel.
//!
//! candle's general matrix product packs the right-hand matrix on every call, which
//! dominates when only a few positions run (a 20-token prompt, a chunk of 16, one
//! appended token). Here the weights are stored once as [`Panels`] (one input feature of
//! 64 rows per four vectors), and each step broadcasts one activation per row and adds
//! 64 outputs with fused multiply-adds, reading the weights strictly in order. The tiling
//! and threading are shared with the bf16 and 8-bit formats.

use std::ops::{Deref, Range};

use crate::model::packed::tiled;
use crate::model::panels::{Panels, GROUP};

/// A `(rows, cols)` f32 matrix in the grouped layout.
#[derive(Debug)]
pub struct F32Matrix(Panels<f32>);

impl Deref for F32Matrix {
    type Target = Panels<f32>;

    fn deref(&self) -> &Panels<f32> {
        &self.0
    }
}

impl F32Matrix {
    /// Builds from row-major values.
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Self {
        Self::from_fn(rows, cols, |i| values[i])
    }

    /// Builds from `value(i)`, the `i`-th element of the row-major matrix.
    pub fn from_fn(rows: usize, cols: usize, value: impl Fn(usize) -> f32 + Sync) -> Self {
        F32Matrix(Panels::build(rows, cols, 1, 1, value))
    }

    /// The rows of `parts` one after another (all with the same number of columns).
    pub fn stack(parts: Vec<Self>) -> Self {
        F32Matrix(Panels::stack(parts.into_iter().map(|p| p.0).collect()))
    }

    /// `x (m, cols) @ self^T -> (m, rows)`, all row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.product(x, m, 0..self.rows())
    }

    /// The columns `rows` of `x @ self^T` (`rows.start` a multiple of 64): `(m, rows.len())`.
    pub fn product(&self, x: &[f32], m: usize, rows: Range<usize>) -> Vec<f32> {
        let depth = self.depth;
        tiled(m, rows.len(), |m0, mb, n0, nb, out, ld| {
            let group = self.group(rows.start + n0);
            block(&x[m0 * depth..][..mb * depth], depth, group, nb, out, ld);
        })
    }
}

/// `out[r * ld + c] = dot(x row r, weight row c)` for every activation row of `x` (rows
/// `depth` long) and the first `n` rows of one group of 64 in the [`Panels`] layout with
/// `pack` 1 (weights, or a page of cached keys).
pub(crate) fn block(x: &[f32], depth: usize, group: &[f32], n: usize, out: &mut [f32], ld: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time; the slices are whole rows and
            // one whole group, checked by the asserts inside.
            unsafe { avx512::block(x, depth, group, n, out, ld) };
            return;
        }
    }
    portable_block(x, depth, group, n, out, ld);
}

fn portable_block(x: &[f32], depth: usize, group: &[f32], n: usize, out: &mut [f32], ld: usize) {
    for (r, xr) in x.chunks_exact(depth).enumerate() {
        for c in 0..n {
            out[r * ld + c] = xr
                .iter()
                .enumerate()
                .map(|(k, v)| v * group[k * GROUP + c])
                .sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::model::panels::{row_tiles, store_tile, GROUP};

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(
        x: &[f32],
        depth: usize,
        group: &[f32],
        n: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        row_tiles!(tile, x, depth, group, n, out, ld);
    }

    /// `R` activation rows against one whole group of 64 weight rows.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>(
        x: &[f32],
        depth: usize,
        group: &[f32],
        n: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let (xp, wp) = (x.as_ptr(), group.as_ptr());
        for k in 0..depth {
            let w: [__m512; 4] =
                std::array::from_fn(|z| _mm512_loadu_ps(wp.add(k * GROUP + 16 * z)));
            for (i, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*xp.add(i * depth + k));
                for (a, &wz) in row.iter_mut().zip(&w) {
                    *a = _mm512_fmadd_ps(xv, wz, *a);
                }
            }
        }
        store_tile(&acc, n, out, ld);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::sample_operands;

    #[test]
    fn matches_a_wide_reference_for_odd_shapes() {
        for (m, n, k) in [
            (1, 7, 33),
            (5, 130, 70),
            (3, 3, 16),
            (67, 9, 40),
            (13, 200, 64),
            (300, 70, 40),
        ] {
            let (x, w) = sample_operands(m, n, k);
            let matrix = F32Matrix::from_f32(&w, n, k);
            let ours = matrix.matmul(&x, m);
            let mut portable = vec![0f32; m * n];
            for g in (0..n).step_by(GROUP) {
                let cols = (n - g).min(GROUP);
                portable_block(&x, k, matrix.group(g), cols, &mut portable[g..], n);
            }
            for r in 0..m {
                for c in 0..n {
                    let exact: f64 = (0..k)
                        .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                        .sum();
                    let close = |v: f32| (v as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs());
                    assert!(close(ours[r * n + c]) && close(portable[r * n + c]));
                }
            }
        }
    }
}
