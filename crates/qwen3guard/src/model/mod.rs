//! The Qwen3 network in the order of the checkpoint's weight map.
//!
//! `rotary` -> `attention` (with the per-sequence [`KvCache`]) -> `mlp` -> `layer` ->
//! `backbone`, then `heads`: Gen's `lm_head` and Stream's classifier pairs. Every
//! matrix product goes through [`Linear`], whose weights are one of the
//! [`crate::kernels`] formats; the kernels, not the network, pick the instruction set.

mod attention;
mod backbone;
mod cache;
mod embedding;
mod heads;
mod layer;
mod linear;
mod mlp;
mod rotary;

pub use attention::Attention;
pub(crate) use backbone::FORWARD_CHUNK;
pub use backbone::{Backbone, BatchItem};
pub use cache::{KvCache, KvPrecision};
pub(crate) use cache::{Rows, KEY_GROUP, PAGE};
pub use embedding::Embedding;
pub use heads::{ClassifierHead, GuardHeads, HeadOutput, LmHead};
pub use layer::DecoderLayer;
pub use linear::{linear, matmul, stacked_linear, Linear, RmsNorm};
pub use mlp::Mlp;
pub use rotary::Rotary;
