//! The NEON variants of the kernels, for aarch64 processors (every ARMv8-A core has NEON).
//!
//! The weights keep the [`Panels`](crate::kernels::Panels) layout the x86 kernels read; a
//! register holds 4 outputs, so one activation row runs against the whole group of 64 (16
//! accumulators: decoding, where the weights' bandwidth is the limit), and several rows
//! against slices of 16 outputs (4 accumulators a row) for up to 6 rows in f32 and 4 in
//! bf16, within the 32 vector registers (the bf16 tile also holds two broadcasts per row
//! and the widened pair). Every function requires NEON; callers check
//! [`crate::kernels::isa`] first.

pub(crate) mod bf16;
pub(crate) mod f32;

use std::arch::aarch64::*;

/// Stores `R` rows of `V` vectors, the outputs `first..first + 4 V` of a group, at
/// `out[r * ld + first..]`, keeping only outputs below `n` (the rest are padding rows).
///
/// # Safety
/// NEON must be available, and `out` must hold `(R - 1) * ld + n` values.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn store_rows<const R: usize, const V: usize>(
    acc: &[[float32x4_t; V]; R],
    first: usize,
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    debug_assert!(R == 0 || out.len() >= (R - 1) * ld + n);
    for (i, row) in acc.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            let at = first + 4 * v;
            let lanes = n.saturating_sub(at).min(4);
            if lanes == 4 {
                vst1q_f32(out.as_mut_ptr().add(i * ld + at), *a);
            } else if lanes > 0 {
                // A partial vector: through a buffer, so no address past `n` is formed.
                let mut lanes_out = [0f32; 4];
                vst1q_f32(lanes_out.as_mut_ptr(), *a);
                out[i * ld + at..][..lanes].copy_from_slice(&lanes_out[..lanes]);
            }
        }
    }
}
