//! bfloat16 weight matrices and their product with f32 activations.
//!
//! candle's CPU backend has no bf16 matrix product, so bf16 weights are kept here as raw
//! bits and multiplied by a kernel built on the processor's bf16 dot-product instruction
//! (AVX512-BF16 `vdpbf16ps`: 32 products per instruction, accumulated in f32). The
//! activations are rounded to bf16 on the way in, the way a bf16 reference feeds them, and
//! the sums stay f32. Without that instruction a portable loop computes the same products
//! (bf16 x bf16 is exact in f32) with a different summation order.

use std::ops::Deref;

use half::bf16;

use crate::model::packed::tiled;
use crate::model::padded::Padded;

/// Row-major `(rows, cols)` bf16 matrix (raw bits), each row padded with zeros to a
/// multiple of 32 so the kernel never needs a tail loop.
#[derive(Debug)]
pub struct Bf16Matrix(Padded<u16>);

impl Deref for Bf16Matrix {
    type Target = Padded<u16>;

    fn deref(&self) -> &Padded<u16> {
        &self.0
    }
}

impl Bf16Matrix {
    /// Builds from little-endian bf16 bytes (`rows * cols * 2` of them).
    pub fn from_le_bytes(bytes: &[u8], rows: usize, cols: usize) -> Self {
        Bf16Matrix(Padded::build(rows, cols, 32, 0, |i| {
            u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])
        }))
    }

    /// Builds by rounding f32 values (row-major `rows * cols`).
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Self {
        Bf16Matrix(Padded::build(rows, cols, 32, 0, |i| {
            bf16::from_f32(values[i]).to_bits()
        }))
    }

    /// The rows of `parts` one after another (all with the same number of columns).
    pub fn stack(parts: Vec<Self>) -> Self {
        Bf16Matrix(Padded::stack(parts.into_iter().map(|p| p.0).collect()))
    }

    /// Row `r` widened to f32 (an embedding lookup).
    pub fn row_f32(&self, r: usize) -> impl Iterator<Item = f32> + '_ {
        self.row(r).iter().map(|&b| bf16::from_bits(b).to_f32())
    }

    /// `x (m, cols) @ self^T -> (m, rows)`, all row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, stride) = (self.rows, self.stride);
        // Round the activations to bf16 once, padded like the weights.
        let xb = self.pad_like(x, m, 0, |v| bf16::from_f32(v).to_bits());
        tiled(m, n, |m0, mb, n0, nb, out, ld| {
            block(
                &xb[m0 * stride..],
                mb,
                &self.data[n0 * stride..],
                nb,
                stride,
                out,
                ld,
            );
        })
    }
}

/// `out[r * ld + c] = dot(x row r, w row c)` for `m` activation rows and `n` weight rows.
fn block(x: &[u16], m: usize, w: &[u16], n: usize, stride: usize, out: &mut [f32], ld: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            // SAFETY: the feature was detected at run time; the slices are long enough
            // (callers pass whole padded rows), checked by the asserts inside.
            unsafe { avx512::block(x, m, w, n, stride, out, ld) };
            return;
        }
    }
    portable_block(x, m, w, n, stride, out, ld);
}

fn portable_block(
    x: &[u16],
    m: usize,
    w: &[u16],
    n: usize,
    stride: usize,
    out: &mut [f32],
    ld: usize,
) {
    for r in 0..m {
        let xr = &x[r * stride..(r + 1) * stride];
        for c in 0..n {
            let wr = &w[c * stride..(c + 1) * stride];
            let mut sum = 0f32;
            for (&a, &b) in xr.iter().zip(wr) {
                sum += bf16::from_bits(a).to_f32() * bf16::from_bits(b).to_f32();
            }
            out[r * ld + c] = sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Register tile: 4 activation rows x 4 weight rows = 16 accumulators.
    const MR: usize = 4;
    const NR: usize = 4;

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn block(
        x: &[u16],
        m: usize,
        w: &[u16],
        n: usize,
        stride: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        assert!(x.len() >= m * stride && w.len() >= n * stride && out.len() >= (m - 1) * ld + n);
        let mut r = 0;
        while r < m {
            let mr = (m - r).min(MR);
            let mut c = 0;
            while c < n {
                let nr = (n - c).min(NR);
                match (mr, nr) {
                    (4, 4) => tile::<4, 4>(x, r, w, c, stride, out, ld),
                    (1, 4) => tile::<1, 4>(x, r, w, c, stride, out, ld),
                    (2, 4) => tile::<2, 4>(x, r, w, c, stride, out, ld),
                    (3, 4) => tile::<3, 4>(x, r, w, c, stride, out, ld),
                    _ => {
                        for rr in 0..mr {
                            for cc in 0..nr {
                                tile::<1, 1>(x, r + rr, w, c + cc, stride, out, ld);
                            }
                        }
                    }
                }
                c += nr;
            }
            r += mr;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize, const C: usize>(
        x: &[u16],
        r0: usize,
        w: &[u16],
        c0: usize,
        stride: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let xp = x.as_ptr().add(r0 * stride);
        let wp = w.as_ptr().add(c0 * stride);
        let mut k = 0;
        while k < stride {
            let mut wv = [_mm512_setzero_si512(); C];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(wp.add(j * stride + k) as *const _);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let xv: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(xp.add(i * stride + k) as *const _));
                for (a, &v) in row.iter_mut().zip(&wv) {
                    *a = _mm512_dpbf16_ps(*a, xv, std::mem::transmute::<__m512i, __m512bh>(v));
                }
            }
            k += 32;
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                out[(r0 + i) * ld + c0 + j] = _mm512_reduce_add_ps(*a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::sample_operands;

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

    #[test]
    fn matches_a_wide_reference_for_odd_shapes() {
        for (m, n, k) in [(1, 7, 33), (5, 130, 70), (1, 64, 1024), (67, 9, 40)] {
            let (x, w) = sample_operands(m, n, k);
            let matrix = Bf16Matrix::from_f32(&w, n, k);
            let ours = matrix.matmul(&x, m);
            let expected = reference(&x, m, &w, n, k);
            for (a, b) in ours.iter().zip(&expected) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{m}x{n}x{k}: {a} vs {b}"
                );
            }
            let mut portable = vec![0f32; m * n];
            let xb = matrix.pad_like(&x, m, 0, |v| bf16::from_f32(v).to_bits());
            portable_block(&xb, m, &matrix.data, n, matrix.stride, &mut portable, n);
            for (a, b) in portable.iter().zip(&expected) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
            }
        }
    }
}
