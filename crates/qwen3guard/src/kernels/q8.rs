//! 8-bit weight matrices and their product with f32 activations.
//!
//! Weights are quantized per output row (symmetric, scale = max|w| / 127) and stored
//! offset by 128 as unsigned bytes, in the [`Panels`] layout with runs of four input
//! features; activations are quantized on the fly per block of 64 (symmetric int8 with an
//! f32 scale per block, which keeps a few large activations from flattening the rest).
//! The product uses the AVX512-VNNI instruction `vpdpbusd` (unsigned x signed bytes, four
//! products summed into each i32 lane): one step loads four vectors of weights (64 rows,
//! four features each) and broadcasts four activations of each row; after each block of
//! 64 features the integer sums are scaled into f32 accumulators. The +128 offset of the
//! weights adds `128 * sum(x_q)` per block, which depends on the activation row only and
//! is removed once per output. Without VNNI a portable loop computes the same sums.

use std::ops::{Deref, Range};

use rayon::prelude::*;

use crate::kernels::packed::tiled;
use crate::kernels::panels::{Panels, GROUP};
#[cfg(target_arch = "x86_64")]
use crate::kernels::{avx2, avx512};
use crate::kernels::{isa, Isa};

/// Activation block: one f32 scale per this many values.
pub(crate) const BLOCK: usize = 64;

/// A `(rows, cols)` int8 matrix (stored as `q + 128`) in the grouped layout, with one
/// scale per row (padded to whole groups with 1).
#[derive(Debug)]
pub struct Q8Matrix {
    values: Panels<u8>,
    scales: Vec<f32>,
}

impl Deref for Q8Matrix {
    type Target = Panels<u8>;

    fn deref(&self) -> &Panels<u8> {
        &self.values
    }
}

/// Activations quantized for one product.
struct QuantizedRows {
    /// `(rows, depth)` values, zero past the columns.
    data: Vec<i8>,
    /// `(rows, blocks)` scales.
    scales: Vec<f32>,
    /// Per row: `sum_b scale[b] * sum(q in block b)`, for the offset correction.
    offsets: Vec<f32>,
    blocks: usize,
}

impl Q8Matrix {
    /// Quantizes f32 values (row-major `rows * cols`).
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Self {
        Self::from_fn(rows, cols, |i| values[i])
    }

    /// Quantizes `value(i)`, the `i`-th element of the row-major matrix.
    pub fn from_fn(rows: usize, cols: usize, value: impl Fn(usize) -> f32 + Sync) -> Self {
        let mut scales: Vec<f32> = (0..rows)
            .into_par_iter()
            .map(|r| row_scale((0..cols).map(|c| value(r * cols + c))))
            .collect();
        let values = Panels::build(rows, cols, 4, BLOCK, |i| {
            (quantize_weight(value(i), scales[i / cols]) + 128) as u8
        });
        scales.resize(rows.div_ceil(GROUP) * GROUP, 1.0);
        Q8Matrix { values, scales }
    }

    /// The rows of `parts` one after another (all with the same number of columns).
    pub fn stack(parts: Vec<Self>) -> Self {
        let mut scales = Vec::new();
        let mut values = Vec::new();
        for part in parts {
            scales.extend_from_slice(&part.scales[..part.rows()]);
            values.push(part.values);
        }
        let values = Panels::stack(values);
        scales.resize(values.rows().div_ceil(GROUP) * GROUP, 1.0);
        Q8Matrix { values, scales }
    }

    /// Row `r` dequantized to f32.
    #[cfg(test)]
    fn row_f32(&self, r: usize) -> impl Iterator<Item = f32> + '_ {
        let scale = self.scales[r];
        (0..self.cols()).map(move |c| (self.get(r, c) as i32 - 128) as f32 * scale)
    }

    /// `x (m, cols) @ self^T -> (m, rows)`, all row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.product(x, m, 0..self.rows())
    }

    /// The columns `rows` of `x @ self^T` (`rows.start` a multiple of 64): `(m, rows.len())`.
    pub fn product(&self, x: &[f32], m: usize, rows: Range<usize>) -> Vec<f32> {
        let xq = quantize(x, m, self.cols(), self.depth);
        tiled(m, rows.len(), |m0, mb, n0, nb, out, ld| {
            let n0 = rows.start + n0;
            let rows = QuantizedView {
                data: &xq.data[m0 * self.depth..][..mb * self.depth],
                scales: &xq.scales[m0 * xq.blocks..][..mb * xq.blocks],
                offsets: &xq.offsets[m0..m0 + mb],
                blocks: xq.blocks,
            };
            let weights = GroupView {
                data: self.group(n0),
                scales: &self.scales[n0..n0 + GROUP],
                depth: self.depth,
            };
            block(&rows, &weights, nb, out, ld);
        })
    }
}

/// Rounds `row` to the values it takes as a row of a [`Q8Matrix`]: what an embedding lookup
/// of an 8-bit model returns, so that lookups and a tied output projection agree.
pub(crate) fn round_row(row: &mut [f32]) {
    let scale = row_scale(row.iter().copied());
    for v in row {
        *v = quantize_weight(*v, scale) as f32 * scale;
    }
}

/// The scale of one weight row: its largest magnitude maps to 127 (1 for a zero row).
fn row_scale(row: impl Iterator<Item = f32>) -> f32 {
    let max = row.fold(0f32, |m, v| m.max(v.abs()));
    if max > 0.0 {
        max / 127.0
    } else {
        1.0
    }
}

fn quantize_weight(value: f32, scale: f32) -> i32 {
    (value / scale).round().clamp(-127.0, 127.0) as i32
}

fn quantize(x: &[f32], m: usize, k: usize, depth: usize) -> QuantizedRows {
    let blocks = depth / BLOCK;
    let mut rows = QuantizedRows {
        data: vec![0i8; m * depth],
        scales: vec![0f32; m * blocks],
        offsets: vec![0f32; m],
        blocks,
    };
    // Rows in parallel: a prompt's activations are too many to quantize on one core.
    rows.data
        .par_chunks_mut(depth)
        .zip(rows.scales.par_chunks_mut(blocks.max(1)))
        .zip(rows.offsets.par_iter_mut())
        .zip(x.par_chunks(k.max(1)))
        .for_each(|(((data, scales), offset), row)| quantize_row(row, data, scales, offset));
    rows
}

/// Quantizes one row of `k` activations into `data` (`depth` long, zero past `k`), with
/// the scale of each block of 64 and the row's offset correction.
fn quantize_row(row: &[f32], data: &mut [i8], scales: &mut [f32], offset: &mut f32) {
    let k = row.len();
    for (b, scale) in scales.iter_mut().enumerate() {
        let values = &row[(b * BLOCK).min(k)..((b + 1) * BLOCK).min(k)];
        let out = &mut data[b * BLOCK..][..values.len()];
        let sum;
        (*scale, sum) = quantize_run(values, out);
        *offset += *scale * sum as f32;
    }
}

/// Quantizes `values` into `out` with one scale, `max |v| / 127` (symmetric, halves
/// rounded to even); returns the scale and the sum of the quantized values. Activation
/// blocks and cached key/value vectors use it.
pub(crate) fn quantize_run(values: &[f32], out: &mut [i8]) -> (f32, i32) {
    quantize_run_on(isa(), values, out)
}

/// [`quantize_run`] on the kernels of `level` (at most what the processor has).
fn quantize_run_on(level: Isa, values: &[f32], out: &mut [i8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `level` is at most the detected instruction set; lengths are checked
        // inside.
        if level >= Isa::Avx512 {
            return unsafe { avx512::q8::quantize_run(values, out) };
        }
        if level >= Isa::Avx2 {
            return unsafe { avx2::q8::quantize_run(values, out) };
        }
    }
    let _ = level;
    portable_quantize_run(values, out)
}

/// [`quantize_run`] without vector instructions.
fn portable_quantize_run(values: &[f32], out: &mut [i8]) -> (f32, i32) {
    let max = values.iter().fold(0f32, |acc, v| acc.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let mut sum = 0;
    for (o, &v) in out.iter_mut().zip(values) {
        *o = (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
        sum += *o as i32;
    }
    (scale, sum)
}

/// Rows quantized for [`group_product`] (attention's queries), each padded to `depth` (a
/// multiple of 64), with a scale per block of 64 as activations have.
pub(crate) struct QuantizedQueries(QuantizedRows);

impl QuantizedQueries {
    /// Quantizes `rows` (each at most `depth` long) like activations, one after another
    /// on this thread (attention quantizes a few rows per task).
    pub(crate) fn new(rows: impl Iterator<Item = impl AsRef<[f32]>>, depth: usize) -> Self {
        let blocks = depth / BLOCK;
        let count = rows.size_hint().0;
        let mut q = QuantizedRows {
            data: Vec::with_capacity(count * depth),
            scales: Vec::with_capacity(count * blocks),
            offsets: Vec::with_capacity(count),
            blocks,
        };
        for row in rows {
            let (data, scales) = (q.data.len(), q.scales.len());
            q.data.resize(data + depth, 0);
            q.scales.resize(scales + blocks, 0.0);
            let mut offset = 0.0;
            quantize_row(
                row.as_ref(),
                &mut q.data[data..],
                &mut q.scales[scales..],
                &mut offset,
            );
            q.offsets.push(offset);
        }
        QuantizedQueries(q)
    }
}

/// Every row of `x` against the first `n` rows of one group of 64 stored like 8-bit
/// weight rows (`data`: `q + 128` bytes in the 4-feature panel layout, rows as long as
/// `x`'s depth; `scales`: one per row): `out[r * ld + c]`. Attention's query-key scores
/// run on it.
pub(crate) fn group_product(
    x: &QuantizedQueries,
    data: &[u8],
    scales: &[f32],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let q = &x.0;
    let rows = QuantizedView {
        data: &q.data,
        scales: &q.scales,
        offsets: &q.offsets,
        blocks: q.blocks,
    };
    let depth = q.blocks * BLOCK;
    block(
        &rows,
        &GroupView {
            data,
            scales,
            depth,
        },
        n,
        out,
        ld,
    );
}

/// `out[r * dim + d] += sum_j weights[r * count + j] * values[j * dim + d]`: f32 weights
/// (rows of `count`) over `count` rows of signed bytes (`dim` each, stored as `u8` bits).
/// Attention sums cached 8-bit values with it, the values' scales folded into the weights.
pub(crate) fn weighted_bytes(
    weights: &[f32],
    count: usize,
    values: &[u8],
    dim: usize,
    out: &mut [f32],
) {
    weighted_bytes_on(isa(), weights, count, values, dim, out);
}

/// [`weighted_bytes`] on the kernels of `level` (at most what the processor has).
fn weighted_bytes_on(
    level: Isa,
    weights: &[f32],
    count: usize,
    values: &[u8],
    dim: usize,
    out: &mut [f32],
) {
    let rows = out.len() / dim.max(1);
    assert!(weights.len() == rows * count && values.len() >= count * dim);
    #[cfg(target_arch = "x86_64")]
    {
        if level >= Isa::Avx512 && dim.is_multiple_of(16) {
            for r0 in (0..rows).step_by(4) {
                let w = &weights[r0 * count..];
                let o = &mut out[r0 * dim..];
                // SAFETY: feature detected at run time; the asserts above bound every
                // access (rows `r0..r0 + R` of weights and outputs exist).
                unsafe {
                    match rows - r0 {
                        1 => avx512::q8::weighted_bytes::<1>(w, count, values, dim, o),
                        2 => avx512::q8::weighted_bytes::<2>(w, count, values, dim, o),
                        3 => avx512::q8::weighted_bytes::<3>(w, count, values, dim, o),
                        _ => avx512::q8::weighted_bytes::<4>(w, count, values, dim, o),
                    }
                }
            }
            return;
        }
        if level >= Isa::Avx2 && dim.is_multiple_of(8) {
            // SAFETY: AVX2 and FMA are within the detected level; the asserts above and
            // inside bound every access.
            unsafe { avx2::q8::weighted_bytes(weights, count, values, dim, out) };
            return;
        }
    }
    let _ = level;
    portable_weighted_bytes(weights, count, values, dim, out);
}

/// [`weighted_bytes`] without vector instructions.
fn portable_weighted_bytes(
    weights: &[f32],
    count: usize,
    values: &[u8],
    dim: usize,
    out: &mut [f32],
) {
    for (w, o) in weights
        .chunks_exact(count.max(1))
        .zip(out.chunks_exact_mut(dim))
    {
        for (&w, row) in w.iter().zip(values.chunks_exact(dim)) {
            for (a, &b) in o.iter_mut().zip(row) {
                *a += w * (b as i8) as f32;
            }
        }
    }
}

/// Some rows of [`QuantizedRows`].
pub(crate) struct QuantizedView<'a> {
    pub(crate) data: &'a [i8],
    pub(crate) scales: &'a [f32],
    pub(crate) offsets: &'a [f32],
    pub(crate) blocks: usize,
}

/// One group of 64 weight rows and their scales.
pub(crate) struct GroupView<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) scales: &'a [f32],
    pub(crate) depth: usize,
}

/// `out[r * ld + c]` for every row of `x` and the first `n` rows of the group.
fn block(x: &QuantizedView, w: &GroupView, n: usize, out: &mut [f32], ld: usize) {
    block_on(isa(), x, w, n, out, ld);
}

/// [`block`] on the kernels of `level` (at most what the processor has).
fn block_on(level: Isa, x: &QuantizedView, w: &GroupView, n: usize, out: &mut [f32], ld: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `level` is at most the detected instruction set; lengths are checked
        // inside.
        if level >= Isa::Avx512Vnni {
            unsafe { avx512::q8::block(x, w, n, out, ld) };
            return;
        }
        if level >= Isa::Avx2 {
            unsafe { avx2::q8::block(x, w, n, out, ld) };
            return;
        }
    }
    let _ = level;
    portable_block(x, w, n, out, ld);
}

/// The same sums without vector instructions.
/// The reference loop: per row and block of 64 features, the group's 64 integer sums
/// accumulate one run of four features at a time, reading the weights in order.
fn portable_block(x: &QuantizedView, w: &GroupView, n: usize, out: &mut [f32], ld: usize) {
    for (r, xr) in x.data.chunks_exact(w.depth).enumerate() {
        let mut total = [0f32; GROUP];
        for (b, xb) in xr.chunks_exact(BLOCK).enumerate() {
            let mut sums = [0i32; GROUP];
            let quads = w.data[b * BLOCK * GROUP..][..BLOCK * GROUP].chunks_exact(4 * GROUP);
            for (xq, wq) in xb.chunks_exact(4).zip(quads) {
                for (s, wr) in sums.iter_mut().zip(wq.chunks_exact(4)) {
                    *s += (0..4).map(|j| xq[j] as i32 * wr[j] as i32).sum::<i32>();
                }
            }
            let scale = x.scales[r * x.blocks + b];
            for (t, &s) in total.iter_mut().zip(&sums) {
                *t += scale * s as f32;
            }
        }
        for (c, &t) in total.iter().enumerate().take(n) {
            out[r * ld + c] = w.scales[c] * (t - 128.0 * x.offsets[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::packed::{sample_operands, test_shapes};

    #[test]
    fn close_to_the_f32_product_for_odd_shapes() {
        let shapes = test_shapes(&[
            (1, 7, 33),
            (5, 130, 70),
            (1, 64, 1024),
            (67, 9, 200),
            (300, 70, 40),
        ]);
        for &(m, n, k) in shapes {
            let (x, w) = sample_operands(m, n, k);
            let ours = Q8Matrix::from_f32(&w, n, k).matmul(&x, m);
            for r in 0..m {
                for c in 0..n {
                    let exact: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
                    let scale: f32 = (0..k).map(|i| (x[r * k + i] * w[c * k + i]).abs()).sum();
                    let got = ours[r * n + c];
                    assert!(
                        (got - exact).abs() <= 0.02 * scale + 1e-3,
                        "{m}x{n}x{k} [{r},{c}]: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_rounded_row_equals_the_matrix_row() {
        let (_, mut w) = sample_operands(0, 5, 70);
        w[3 * 70..4 * 70].fill(0.0);
        let matrix = Q8Matrix::from_f32(&w, 5, 70);
        for (r, row) in w.chunks_mut(70).enumerate() {
            let original = row.to_vec();
            round_row(row);
            assert_eq!(
                row.to_vec(),
                matrix.row_f32(r).collect::<Vec<_>>(),
                "row {r}"
            );
            if r != 3 {
                assert_ne!(row.to_vec(), original, "row {r} was not rounded");
            }
        }
    }

    #[test]
    fn every_path_agrees_with_the_portable_one() {
        eprintln!("q8 paths: {:?}", Isa::supported());
        let (m, n, k) = (7, 75, 150);
        let (x, w) = sample_operands(m, n, k);
        let parts = vec![
            Q8Matrix::from_f32(&w[..40 * k], 40, k),
            Q8Matrix::from_f32(&w[40 * k..], 35, k),
        ];
        let matrix = Q8Matrix::stack(parts);
        let fast = matrix.matmul(&x, m);
        let xq = quantize(&x, m, k, matrix.depth);
        let rows = QuantizedView {
            data: &xq.data,
            scales: &xq.scales,
            offsets: &xq.offsets,
            blocks: xq.blocks,
        };
        for g in (0..n).step_by(GROUP) {
            let cols = (n - g).min(GROUP);
            let weights = GroupView {
                data: matrix.group(g),
                scales: &matrix.scales[g..g + GROUP],
                depth: matrix.depth,
            };
            let mut portable = vec![0f32; m * cols];
            portable_block(&rows, &weights, cols, &mut portable, cols);
            for level in Isa::supported() {
                let mut out = vec![0f32; m * cols];
                block_on(level, &rows, &weights, cols, &mut out, cols);
                for r in 0..m {
                    for c in 0..cols {
                        let (a, b) = (out[r * cols + c], portable[r * cols + c]);
                        assert!(
                            (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                            "{level}: {a} vs {b}"
                        );
                        let a = fast[r * n + g + c];
                        assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
                    }
                }
            }
        }
        // Stacking kept every row: the stacked product equals the whole matrix's.
        let whole = Q8Matrix::from_f32(&w, n, k).matmul(&x, m);
        assert_eq!(fast, whole);
    }

    /// Every path of the quantizer and of the byte weighted sum that this processor has
    /// agrees with the portable one.
    #[test]
    fn quantizer_and_byte_sums_agree_with_the_portable_paths() {
        let (x, _) = sample_operands(1, 1, 200);
        for level in Isa::supported() {
            for len in [1, 7, 15, 16, 64, 200] {
                let (mut fast, mut slow) = (vec![0i8; len], vec![0i8; len]);
                let a = quantize_run_on(level, &x[..len], &mut fast);
                let b = portable_quantize_run(&x[..len], &mut slow);
                assert_eq!((a, &fast), (b, &slow), "{level}: {len} values");
                assert!(fast.iter().any(|&q| q.unsigned_abs() == 127));
            }
            // With a scale of 1, half-way values round to even on every path.
            let ties = [0.5f32, 1.5, -2.5, 127.0, 3.5, -0.5, 2.5, 1.0, 4.5];
            let (mut fast, mut slow) = ([0i8; 9], [0i8; 9]);
            quantize_run_on(level, &ties, &mut fast);
            portable_quantize_run(&ties, &mut slow);
            assert_eq!(fast, [0, 2, -2, 127, 4, 0, 2, 1, 4], "{level}");
            assert_eq!(fast, slow);

            for (rows, count, dim) in [(3, 37, 80), (5, 9, 136), (1, 4, 8)] {
                let (weights, _) = sample_operands(rows, 1, count);
                let values: Vec<u8> = (0..count * dim).map(|i| (i * 37 % 251) as u8).collect();
                let (mut fast, mut slow) = (vec![0.5f32; rows * dim], vec![0.5f32; rows * dim]);
                let weights = &weights[..rows * count];
                weighted_bytes_on(level, weights, count, &values, dim, &mut fast);
                portable_weighted_bytes(weights, count, &values, dim, &mut slow);
                for (a, b) in fast.iter().zip(&slow) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{level}: {a} vs {b}"
                    );
                }
            }
            // The bytes are signed: 200 reads as -56.
            let mut one = vec![0f32; 16];
            weighted_bytes_on(level, &[2.0], 1, &[200u8; 16], 16, &mut one);
            assert_eq!(one, vec![-112.0; 16], "{level}");
        }
    }
}
