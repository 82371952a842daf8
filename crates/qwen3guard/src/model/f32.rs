//! f32 weight matrices with an AVX-512 product kernel for the shapes guards run.
//!
//! candle's general matrix product packs the right-hand matrix on every call, which
//! dominates when only a few positions run (a 20-token prompt, a chunk of 16): there the
//! rows of a row-major weight are read once, directly, with fused multiply-adds on 16
//! lanes. The tiling and threading are shared with the bf16 and 8-bit formats.

use std::ops::Deref;

use crate::model::packed::tiled;
use crate::model::padded::Padded;

/// Row-major `(rows, cols)` f32 matrix, rows padded with zeros to a multiple of 16.
#[derive(Debug)]
pub struct F32Matrix(Padded<f32>);

const LANES: usize = 16;

impl Deref for F32Matrix {
    type Target = Padded<f32>;

    fn deref(&self) -> &Padded<f32> {
        &self.0
    }
}

impl F32Matrix {
    /// Builds from row-major values.
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Self {
        F32Matrix(Padded::build(rows, cols, LANES, 0.0, |i| values[i]))
    }

    /// The rows of `parts` one after another (all with the same number of columns).
    pub fn stack(parts: Vec<Self>) -> Self {
        F32Matrix(Padded::stack(parts.into_iter().map(|p| p.0).collect()))
    }

    /// `x (m, cols) @ self^T -> (m, rows)`, all row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let stride = self.stride;
        let xp = self.pad_like(x, m, 0.0, |v| v);
        tiled(m, self.rows, |m0, mb, n0, nb, out, ld| {
            let mut r = 0;
            while r < mb {
                let rr = (mb - r).min(4);
                let x_rows: [&[f32]; 4] = std::array::from_fn(|i| {
                    let row = m0 + r + i.min(rr - 1);
                    &xp[row * stride..(row + 1) * stride]
                });
                let mut c = 0;
                while c < nb {
                    let cc = (nb - c).min(4);
                    let w_rows: [&[f32]; 4] = std::array::from_fn(|j| {
                        let row = n0 + c + j.min(cc - 1);
                        &self.data[row * stride..(row + 1) * stride]
                    });
                    let sums = dots(x_rows, rr, w_rows);
                    for i in 0..rr {
                        out[(r + i) * ld + c..(r + i) * ld + c + cc]
                            .copy_from_slice(&sums[i][..cc]);
                    }
                    c += cc;
                }
                r += rr;
            }
        })
    }
}

/// The 4 x 4 dot products of `x[i]` with `w[j]` (rows of one padded length); only the
/// first `live` rows of `x` are distinct, the others repeat the last (and are ignored).
pub(crate) fn dots(x: [&[f32]; 4], live: usize, w: [&[f32]; 4]) -> [[f32; 4]; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: feature detected at run time; lengths are checked inside.
            return unsafe {
                match live {
                    1 => avx512::dots::<1>(x, w),
                    2 => avx512::dots::<2>(x, w),
                    3 => avx512::dots::<3>(x, w),
                    _ => avx512::dots::<4>(x, w),
                }
            };
        }
    }
    let _ = live;
    x.map(|xr| w.map(|wr| xr.iter().zip(wr).map(|(a, b)| a * b).sum()))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `R` activation rows against 4 weight rows: `R x 4` accumulators, each step loading
    /// 16 lanes of every row once.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots<const R: usize>(x: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
        let len = x[0].len();
        assert!(len % super::LANES == 0 && x.iter().chain(&w).all(|r| r.len() == len));
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let mut k = 0;
        while k < len {
            let wv: [__m512; 4] = std::array::from_fn(|j| _mm512_loadu_ps(w[j].as_ptr().add(k)));
            for (i, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(x[i].as_ptr().add(k));
                for (a, &v) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, v, *a);
                }
            }
            k += super::LANES;
        }
        let mut out = [[0f32; 4]; 4];
        for (o, row) in out.iter_mut().zip(&acc) {
            *o = row.map(|a| _mm512_reduce_add_ps(a));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::sample_operands;

    #[test]
    fn matches_a_wide_reference_for_odd_shapes() {
        for (m, n, k) in [(1, 7, 33), (5, 130, 70), (3, 3, 16), (67, 9, 40)] {
            let (x, w) = sample_operands(m, n, k);
            let ours = F32Matrix::from_f32(&w, n, k).matmul(&x, m);
            for r in 0..m {
                for c in 0..n {
                    let exact: f64 = (0..k)
                        .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                        .sum();
                    assert!((ours[r * n + c] as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs()));
                }
            }
        }
    }
}
