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

crate::kernels::panels::store_rows_fn!(float32x4_t, 4, vst1q_f32, "neon");
