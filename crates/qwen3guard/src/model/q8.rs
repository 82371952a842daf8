//! 8-bit weight matrices and their product with f32 activations.
//!
//! Weights are quantized per output row (symmetric, scale = max|w| / 127) and stored
//! offset by 128 as unsigned bytes; activations are quantized on the fly per block of 64
//! (symmetric int8 with an f32 scale per block, which keeps a few large activations from
//! flattening the rest). The product uses the AVX512-VNNI instruction `vpdpbusd`
//! (unsigned x signed bytes, summed in i32): the +128 offset of the weights adds
//! `128 * sum(x_q)` per block, which depends on the activation row only and is removed
//! once per output. Without VNNI a portable loop computes the same integer sums.

use std::ops::Deref;

use crate::model::packed::tiled;
use crate::model::padded::Padded;

/// Activation block: one f32 scale per this many values.
const BLOCK: usize = 64;

/// Row-major `(rows, cols)` int8 matrix (stored as `q + 128`), rows padded to a multiple
/// of 64 with the offset of zero, and one scale per row.
#[derive(Debug)]
pub struct Q8Matrix {
    values: Padded<u8>,
    scales: Vec<f32>,
}

impl Deref for Q8Matrix {
    type Target = Padded<u8>;

    fn deref(&self) -> &Padded<u8> {
        &self.values
    }
}

/// Activations quantized for one product.
struct QuantizedRows {
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
        let scales: Vec<f32> = values
            .chunks_exact(cols)
            .take(rows)
            .map(|row| {
                let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                if max > 0.0 {
                    max / 127.0
                } else {
                    1.0
                }
            })
            .collect();
        let values = Padded::build(rows, cols, BLOCK, 128u8, |i| {
            let q = (values[i] / scales[i / cols]).round().clamp(-127.0, 127.0) as i32;
            (q + 128) as u8
        });
        Q8Matrix { values, scales }
    }

    /// The rows of `parts` one after another (all with the same number of columns).
    pub fn stack(parts: Vec<Self>) -> Self {
        let scales = parts
            .iter()
            .flat_map(|p| p.scales.iter().copied())
            .collect();
        let values = Padded::stack(parts.into_iter().map(|p| p.values).collect());
        Q8Matrix { values, scales }
    }

    /// Row `r` dequantized to f32 (an embedding lookup).
    pub fn row_f32(&self, r: usize) -> impl Iterator<Item = f32> + '_ {
        let scale = self.scales[r];
        self.row(r)
            .iter()
            .map(move |&q| (q as i32 - 128) as f32 * scale)
    }

    /// `x (m, cols) @ self^T -> (m, rows)`, all row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let n = self.rows;
        let xq = quantize(x, m, self.cols, self.stride);
        tiled(m, n, |m0, mb, n0, nb, out, ld| {
            block(&xq, m0, mb, self, n0, nb, out, ld);
        })
    }
}

fn quantize(x: &[f32], m: usize, k: usize, stride: usize) -> QuantizedRows {
    let blocks = stride / BLOCK;
    let mut data = vec![0i8; m * stride];
    let mut scales = vec![0f32; m * blocks];
    let mut offsets = vec![0f32; m];
    for r in 0..m {
        let row = &x[r * k..(r + 1) * k];
        for b in 0..blocks {
            let values = &row[(b * BLOCK).min(k)..((b + 1) * BLOCK).min(k)];
            let max = values.iter().fold(0f32, |acc, v| acc.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            let mut sum = 0i32;
            for (i, &v) in values.iter().enumerate() {
                let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
                data[r * stride + b * BLOCK + i] = q;
                sum += q as i32;
            }
            scales[r * blocks + b] = scale;
            offsets[r] += scale * sum as f32;
        }
    }
    QuantizedRows {
        data,
        scales,
        offsets,
        blocks,
    }
}

/// Fills `out[(r - m0) * ld + (c - n0)]` for rows `m0..m0+mb` of `x` and weight rows
/// `n0..n0+nb`.
#[allow(clippy::too_many_arguments)]
fn block(
    x: &QuantizedRows,
    m0: usize,
    mb: usize,
    w: &Q8Matrix,
    n0: usize,
    nb: usize,
    out: &mut [f32],
    ld: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: features detected at run time; index ranges are checked inside.
            unsafe { avx512::block(x, m0, mb, w, n0, nb, out, ld) };
            return;
        }
    }
    portable_block(x, m0, mb, w, n0, nb, out, ld);
}

/// The same sums without vector instructions.
#[allow(clippy::too_many_arguments)]
fn portable_block(
    x: &QuantizedRows,
    m0: usize,
    mb: usize,
    w: &Q8Matrix,
    n0: usize,
    nb: usize,
    out: &mut [f32],
    ld: usize,
) {
    for r in 0..mb {
        for c in 0..nb {
            let (xr, wr) = (m0 + r, n0 + c);
            let mut total = 0f32;
            for b in 0..x.blocks {
                let mut sum = 0i32;
                for i in b * BLOCK..(b + 1) * BLOCK {
                    sum += x.data[xr * w.stride + i] as i32 * w.data[wr * w.stride + i] as i32;
                }
                total += x.scales[xr * x.blocks + b] * sum as f32;
            }
            out[r * ld + c] = w.scales[wr] * (total - 128.0 * x.offsets[xr]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Q8Matrix, QuantizedRows, BLOCK};

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn block(
        x: &QuantizedRows,
        m0: usize,
        mb: usize,
        w: &Q8Matrix,
        n0: usize,
        nb: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        assert!((m0 + mb) * w.stride <= x.data.len() && (n0 + nb) * w.stride <= w.data.len());
        assert!(out.len() >= (mb - 1) * ld + nb);
        let mut r = 0;
        while r < mb {
            let rr = (mb - r).min(4);
            let mut c = 0;
            while c < nb {
                let cc = (nb - c).min(4);
                match (rr, cc) {
                    (4, 4) => tile::<4, 4>(x, m0 + r, w, n0 + c, out, r * ld + c, ld),
                    (1, 4) => tile::<1, 4>(x, m0 + r, w, n0 + c, out, r * ld + c, ld),
                    (2, 4) => tile::<2, 4>(x, m0 + r, w, n0 + c, out, r * ld + c, ld),
                    (3, 4) => tile::<3, 4>(x, m0 + r, w, n0 + c, out, r * ld + c, ld),
                    _ => {
                        for i in 0..rr {
                            for j in 0..cc {
                                tile::<1, 1>(
                                    x,
                                    m0 + r + i,
                                    w,
                                    n0 + c + j,
                                    out,
                                    (r + i) * ld + c + j,
                                    ld,
                                );
                            }
                        }
                    }
                }
                c += cc;
            }
            r += rr;
        }
    }

    /// An `R x C` tile of outputs: per block of 64, `R x C` VNNI dot products into i32
    /// lanes, then scaled by the activation block's scale into f32 accumulators.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const R: usize, const C: usize>(
        x: &QuantizedRows,
        xr: usize,
        w: &Q8Matrix,
        wc: usize,
        out: &mut [f32],
        at: usize,
        ld: usize,
    ) {
        let stride = w.stride;
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let xp = x.data.as_ptr().add(xr * stride) as *const u8;
        let wp = w.data.as_ptr().add(wc * stride);
        for b in 0..x.blocks {
            let k = b * BLOCK;
            let mut wv = [_mm512_setzero_si512(); C];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(wp.add(j * stride + k) as *const _);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_si512(xp.add(i * stride + k) as *const _);
                let scale = _mm512_set1_ps(*x.scales.get_unchecked((xr + i) * x.blocks + b));
                for (a, &v) in row.iter_mut().zip(&wv) {
                    let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, xv);
                    *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *a);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let offset = 128.0 * x.offsets[xr + i];
            for (j, a) in row.iter().enumerate() {
                out[at + i * ld + j] = w.scales[wc + j] * (_mm512_reduce_add_ps(*a) - offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::sample_operands;

    #[test]
    fn close_to_the_f32_product_for_odd_shapes() {
        for (m, n, k) in [(1, 7, 33), (5, 130, 70), (1, 64, 1024), (67, 9, 200)] {
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
    fn vector_and_portable_paths_agree() {
        let (m, n, k) = (6, 11, 150);
        let (x, w) = sample_operands(m, n, k);
        let matrix = Q8Matrix::from_f32(&w, n, k);
        let fast = matrix.matmul(&x, m);
        let xq = quantize(&x, m, k, matrix.stride);
        let mut portable = vec![0f32; m * n];
        portable_block(&xq, 0, m, &matrix, 0, n, &mut portable, n);
        for (a, b) in fast.iter().zip(&portable) {
            assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
