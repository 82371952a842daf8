//! AVX2 + FMA kernel of [`crate::kernels::f32`]: one broadcast activation times 8 weight
//! rows per fused multiply-add.

use std::arch::x86_64::*;

use crate::kernels::avx2::{half_tiles, store_rows};
use crate::kernels::panels::GROUP;

/// [`crate::kernels::f32`]'s block product.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn block(
    x: &[f32],
    depth: usize,
    group: &[f32],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    half_tiles!(tile, 3, x, depth, group, n, out, ld);
}

/// `R` activation rows against the group's outputs `first..first + 8 V`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const V: usize>(
    x: &[f32],
    depth: usize,
    group: &[f32],
    first: usize,
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let (xp, wp) = (x.as_ptr(), group.as_ptr().add(first));
    for k in 0..depth {
        let w: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(wp.add(k * GROUP + 8 * v)));
        for (i, row) in acc.iter_mut().enumerate() {
            let xv = _mm256_broadcast_ss(&*xp.add(i * depth + k));
            for (a, &wv) in row.iter_mut().zip(&w) {
                *a = _mm256_fmadd_ps(xv, wv, *a);
            }
        }
    }
    store_rows(&acc, first, n, out, ld);
}
