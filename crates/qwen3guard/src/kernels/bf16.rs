//! bfloat16 weight matrices and their product with f32 activations.
//!
//! candle's CPU backend has no bf16 matrix product, so bf16 weights are kept here as raw
//! bits and multiplied by a kernel built on the processor's bf16 dot-product instruction
//! (AVX512-BF16 `vdpbf16ps`: 16 lanes, each adding the products of one pair of values).
//! The weights are stored as [`Panels`] with pairs of input features side by side: one
//! step loads four vectors of weights (64 rows, one pair each), broadcasts one pair of
//! each activation row, and adds 64 outputs per row. The activations are rounded to bf16
//! on the way in, the way a bf16 reference feeds them, and the sums stay f32. Without
//! that instruction a portable loop computes the same products (bf16 x bf16 is exact in
//! f32) in another order.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::borrow::Cow;
use std::ops::{Deref, Range};

use half::bf16;

#[cfg(target_arch = "aarch64")]
use crate::kernels::neon;
use crate::kernels::packed::tiled;
use crate::kernels::panels::{Panels, GROUP};
#[cfg(target_arch = "x86_64")]
use crate::kernels::{avx2, avx512};
use crate::kernels::{isa, Isa};

/// A `(rows, cols)` bf16 matrix (raw bits) in the grouped layout with pairs of input
/// features side by side.
#[derive(Debug)]
pub struct Bf16Matrix(Panels<u16>);

impl Deref for Bf16Matrix {
    type Target = Panels<u16>;

    fn deref(&self) -> &Panels<u16> {
        &self.0
    }
}

impl Bf16Matrix {
    /// Builds from little-endian bf16 bytes (`rows * cols * 2` of them).
    pub fn from_le_bytes(bytes: &[u8], rows: usize, cols: usize) -> Self {
        Bf16Matrix(Panels::build(rows, cols, 2, 2, |i| {
            u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])
        }))
    }

    /// Builds by rounding f32 values (row-major `rows * cols`).
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Self {
        Self::from_fn(rows, cols, |i| values[i])
    }

    /// Builds by rounding `value(i)`, the `i`-th element of the row-major matrix.
    pub fn from_fn(rows: usize, cols: usize, value: impl Fn(usize) -> f32 + Sync) -> Self {
        Bf16Matrix(Panels::build(rows, cols, 2, 2, |i| {
            bf16::from_f32(value(i)).to_bits()
        }))
    }

    /// The rows of `parts` one after another (all with the same number of columns).
    pub fn stack(parts: Vec<Self>) -> Self {
        Bf16Matrix(Panels::stack(parts.into_iter().map(|p| p.0).collect()))
    }

    /// `x (m, cols) @ self^T -> (m, rows)`, all row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.product(x, m, 0..self.rows())
    }

    /// The columns `rows` of `x @ self^T` (`rows.start` a multiple of 64): `(m, rows.len())`.
    pub fn product(&self, x: &[f32], m: usize, rows: Range<usize>) -> Vec<f32> {
        let depth = self.depth;
        // Round the activations to bf16 once.
        let xb = self.activations(x, m, |v| bf16::from_f32(v).to_bits());
        // Kernels that broadcast f32 values get them widened once here, not once per group.
        let level = isa();
        let wide = widens(level).then(|| widen_all(&xb));
        tiled(m, rows.len(), |m0, mb, n0, nb, out, ld| {
            let group = self.group(rows.start + n0);
            let range = m0 * depth..(m0 + mb) * depth;
            let wide = wide.as_ref().map(|w| &w[range.clone()]);
            block_on(level, &xb[range], wide, depth, group, nb, out, ld);
        })
    }
}

/// `out[r * ld + c] = dot(x row r, weight row c)` for every activation row of `x` (bf16
/// bits, rows `depth` long) and the first `n` rows of one group of 64 in the [`Panels`]
/// layout with `pack` 2 (weights, or a page of cached keys).
pub(crate) fn block(x: &[u16], depth: usize, group: &[u16], n: usize, out: &mut [f32], ld: usize) {
    block_on(isa(), x, None, depth, group, n, out, ld);
}

/// Whether the kernels of `level` read the activations widened to f32 (those without a
/// bf16 dot product broadcast f32 values in their inner loops).
fn widens(level: Isa) -> bool {
    match level {
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni | Isa::Neon => true,
        Isa::Portable | Isa::Avx512Bf16 => false,
    }
}

/// [`block`] on the kernels of `level` (at most what the processor has); `wide` is `x`
/// already widened when the caller has it (see [`widens`]), else it is widened here.
#[allow(clippy::too_many_arguments)]
fn block_on(
    level: Isa,
    x: &[u16],
    wide: Option<&[f32]>,
    depth: usize,
    group: &[u16],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `level` is at most the detected instruction set (`isa()`, or a lower
        // level in tests); the slices are whole padded rows and one whole group, checked
        // by the asserts inside.
        if level >= Isa::Avx512Bf16 {
            unsafe { avx512::bf16::block(x, depth, group, n, out, ld) };
            return;
        }
        if level >= Isa::Avx2 {
            let x = wide.map_or_else(|| widen_all(x).into(), Cow::Borrowed);
            unsafe { avx2::bf16::block(&x, depth, group, n, out, ld) };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if level >= Isa::Neon {
        // SAFETY: as above; NEON is part of every aarch64 processor `detected` reports.
        let x = wide.map_or_else(|| widen_all(x).into(), Cow::Borrowed);
        unsafe { neon::bf16::block(&x, depth, group, n, out, ld) };
        return;
    }
    let _ = (level, wide);
    portable_block(x, depth, group, n, out, ld);
}

/// bf16 bits widened to f32, exactly.
fn widen_all(x: &[u16]) -> Vec<f32> {
    x.iter()
        .map(|&b| f32::from_bits((b as u32) << 16))
        .collect()
}

/// The reference loop: for each row, the group's 64 outputs accumulate one pair of input
/// features at a time, reading the weights in order.
fn portable_block(x: &[u16], depth: usize, group: &[u16], n: usize, out: &mut [f32], ld: usize) {
    let widen = |b: u16| bf16::from_bits(b).to_f32();
    for (r, xr) in x.chunks_exact(depth).enumerate() {
        let mut acc = [0f32; GROUP];
        for (pair, w) in xr.chunks_exact(2).zip(group.chunks_exact(2 * GROUP)) {
            let (x0, x1) = (widen(pair[0]), widen(pair[1]));
            for (a, w) in acc.iter_mut().zip(w.chunks_exact(2)) {
                *a += x0 * widen(w[0]) + x1 * widen(w[1]);
            }
        }
        out[r * ld..][..n].copy_from_slice(&acc[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::packed::{sample_operands, test_shapes};

    fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let round = |v: f32| bf16::from_f32(v).to_f32();
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                out[r * n + c] = (0..k)
                    .map(|i| round(x[r * k + i]) as f64 * round(w[c * k + i]) as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    fn assert_close(ours: &[f32], expected: &[f32], what: &str) {
        assert_eq!(ours.len(), expected.len());
        for (a, b) in ours.iter().zip(expected) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{what}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn every_path_matches_a_wide_reference_for_odd_shapes() {
        eprintln!("bf16 paths: {:?}", Isa::supported());
        let shapes = test_shapes(&[
            (1, 7, 33),
            (5, 130, 70),
            (1, 64, 1024),
            (67, 9, 40),
            (13, 200, 64),
            (300, 70, 40),
            // Depths past the AVX2 kernel's pass of 384 features, the last pass partial.
            (5, 70, 800),
            (3, 64, 1030),
        ]);
        for &(m, n, k) in shapes {
            let (x, w) = sample_operands(m, n, k);
            let matrix = Bf16Matrix::from_f32(&w, n, k);
            let expected = reference(&x, m, &w, n, k);
            assert_close(&matrix.matmul(&x, m), &expected, &format!("{m}x{n}x{k}"));
            // Every path this processor has, one group at a time.
            let xb = matrix.activations(&x, m, |v| bf16::from_f32(v).to_bits());
            for g in 0..n.div_ceil(GROUP) {
                let cols = (n - g * GROUP).min(GROUP);
                let part: Vec<f32> = (0..m)
                    .flat_map(|r| expected[r * n + g * GROUP..][..cols].to_vec())
                    .collect();
                for level in Isa::supported() {
                    let mut out = vec![0f32; m * cols];
                    let group = matrix.group(g * GROUP);
                    block_on(level, &xb, None, matrix.depth, group, cols, &mut out, cols);
                    assert_close(&out, &part, level.name());
                }
            }
        }
    }
}
