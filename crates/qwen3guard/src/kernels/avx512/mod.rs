//! The AVX-512 variants of the kernels: 16 lanes, masked tails, `vdpbf16ps` for bf16 and
//! `vpdpbusd` for 8-bit products. Every function here requires the features its
//! `target_feature` names; callers check [`crate::kernels::isa`] first.

pub(crate) mod bf16;
pub(crate) mod f32;
pub(crate) mod math;
pub(crate) mod q8;
