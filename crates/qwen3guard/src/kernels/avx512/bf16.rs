//! AVX-512 kernels of [`crate::kernels::bf16`].

use std::arch::x86_64::*;

use crate::kernels::panels::{row_tiles, store_tile, GROUP};

#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn block(
    x: &[u16],
    depth: usize,
    group: &[u16],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    assert!(depth.is_multiple_of(2));
    row_tiles!(tile, x, depth, group, n, out, ld);
}

/// `R` activation rows against one whole group of 64 weight rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile<const R: usize>(
    x: &[u16],
    depth: usize,
    group: &[u16],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    let (xp, wp) = (x.as_ptr(), group.as_ptr());
    for pair in 0..depth / 2 {
        let w: [__m512bh; 4] = std::array::from_fn(|z| {
            std::mem::transmute(_mm512_loadu_si512(
                wp.add(pair * 2 * GROUP + 32 * z) as *const _
            ))
        });
        for (i, row) in acc.iter_mut().enumerate() {
            let bits = (xp.add(i * depth + 2 * pair) as *const i32).read_unaligned();
            let xv: __m512bh = std::mem::transmute(_mm512_set1_epi32(bits));
            for (a, &wz) in row.iter_mut().zip(&w) {
                *a = _mm512_dpbf16_ps(*a, xv, wz);
            }
        }
    }
    store_tile(&acc, n, out, ld);
}
