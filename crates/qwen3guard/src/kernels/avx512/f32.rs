//! AVX-512 kernels of [`crate::kernels::f32`].

use std::arch::x86_64::*;

use crate::kernels::panels::{row_tiles, store_tile, GROUP};

#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn block(
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
        let w: [__m512; 4] = std::array::from_fn(|z| _mm512_loadu_ps(wp.add(k * GROUP + 16 * z)));
        for (i, row) in acc.iter_mut().enumerate() {
            let xv = _mm512_set1_ps(*xp.add(i * depth + k));
            for (a, &wz) in row.iter_mut().zip(&w) {
                *a = _mm512_fmadd_ps(xv, wz, *a);
            }
        }
    }
    store_tile(&acc, n, out, ld);
}
