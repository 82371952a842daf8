//! The Qwen3 network in the order of the checkpoint's weight map.
//!
//! `rotary` -> `attention` (with the per-sequence [`KvCache`]) -> `mlp` -> `layer` ->
//! `backbone`, then `heads`: Gen's `lm_head` and Stream's classifier pairs. Every
//! matrix product goes through [`linear::matmul`], the one place that picks a kernel.

mod attention;
mod backbone;
mod bf16;
mod cache;
mod cache_attention;
mod embedding;
mod f32;
mod heads;
mod layer;
mod linear;
mod math;
mod mlp;
mod packed;
mod panels;
pub(crate) mod q8;
mod rotary;

pub use attention::Attention;
pub use backbone::{Backbone, BatchItem};
pub use bf16::Bf16Matrix;
pub use cache::{KvCache, KvPrecision};
pub use embedding::Embedding;
pub use f32::F32Matrix;
pub use heads::{ClassifierHead, GuardHeads, HeadOutput, LmHead};
pub use layer::DecoderLayer;
pub use linear::{linear, matmul, stacked_linear, Linear, RmsNorm};
pub use mlp::Mlp;
pub use packed::PackedMatrix;
pub use panels::Panels;
pub use q8::Q8Matrix;
pub use rotary::Rotary;
