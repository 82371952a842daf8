//! NEON kernel of [`crate::kernels::f32`]: one broadcast activation times 4 weight rows per
//! fused multiply-add.

use std::arch::aarch64::*;

use crate::kernels::neon::store_rows;
use crate::kernels::panels::{slice_tiles, GROUP};

/// [`crate::kernels::f32`]'s block product.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn block(
    x: &[f32],
    depth: usize,
    group: &[f32],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    slice_tiles!(tile, 4 x 4, whole 16, [1 2 3 4 5 6], x, depth, group, n, out, ld);
}

/// `R` activation rows against the group's outputs `first..first + 4 V`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile<const R: usize, const V: usize>(
    x: &[f32],
    depth: usize,
    group: &[f32],
    first: usize,
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let mut acc = [[vdupq_n_f32(0.0); V]; R];
    let (xp, wp) = (x.as_ptr(), group.as_ptr().add(first));
    let rows: [*const f32; R] = std::array::from_fn(|i| xp.add(i * depth));
    for k in 0..depth {
        let w: [float32x4_t; V] = std::array::from_fn(|v| vld1q_f32(wp.add(k * GROUP + 4 * v)));
        for (row, &xr) in acc.iter_mut().zip(&rows) {
            let xv = vld1q_dup_f32(xr.add(k));
            for (a, &wv) in row.iter_mut().zip(&w) {
                *a = vfmaq_f32(*a, xv, wv);
            }
        }
    }
    store_rows(&acc, first, n, out, ld);
}
