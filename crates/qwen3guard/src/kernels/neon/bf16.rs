//! NEON kernel of [`crate::kernels::bf16`]: the weights stay bf16 in memory (half of f32's
//! bandwidth) and are widened in registers, 4 rows' pairs per load: shifting a pair left by
//! 16 bits gives the first feature's f32, masking off its low half the second's (as the
//! AVX2 kernel does on 8 lanes). Activations arrive widened to f32 by the caller. Products
//! and sums are f32, each output adding the even feature's product, then the odd one's.

use std::arch::aarch64::*;

use crate::kernels::neon::store_rows;
use crate::kernels::panels::{slice_tiles, GROUP};

/// [`crate::kernels::bf16`]'s block product, on activations already widened to f32.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn block(
    x: &[f32],
    depth: usize,
    group: &[u16],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    assert!(depth.is_multiple_of(2));
    slice_tiles!(tile, 4 x 4, whole 16, [1 2 3 4], x, depth, group, n, out, ld);
}

/// `R` activation rows (widened) against the group's outputs `first..first + 4 V`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile<const R: usize, const V: usize>(
    x: &[f32],
    depth: usize,
    group: &[u16],
    first: usize,
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let mut acc = [[vdupq_n_f32(0.0); V]; R];
    let high = vdupq_n_u32(0xffff_0000);
    let (xp, wp) = (x.as_ptr(), group.as_ptr().add(2 * first));
    for pair in 0..depth / 2 {
        let xv: [[float32x4_t; 2]; R] = std::array::from_fn(|i| {
            let at = xp.add(i * depth + 2 * pair);
            [vld1q_dup_f32(at), vld1q_dup_f32(at.add(1))]
        });
        for v in 0..V {
            let w = vreinterpretq_u32_u16(vld1q_u16(wp.add(pair * 2 * GROUP + 8 * v)));
            let even = vreinterpretq_f32_u32(vshlq_n_u32::<16>(w));
            let odd = vreinterpretq_f32_u32(vandq_u32(w, high));
            for (row, x) in acc.iter_mut().zip(&xv) {
                row[v] = vfmaq_f32(row[v], x[0], even);
                row[v] = vfmaq_f32(row[v], x[1], odd);
            }
        }
    }
    store_rows(&acc, first, n, out, ld);
}
