//! Qwen3Guard inference: the Gen and Stream safety guardrail models, in Rust.
//!
//! - [`checkpoint::Checkpoint`] opens a Hugging Face checkpoint directory (or fetches a
//!   repo id) and validates its config.
//! - [`gen::GenGuard`] moderates a [`prompt::Conversation`] by writing the verdict, as the
//!   reference does, and scores the three safety labels.
//! - [`stream::StreamGuard`] classifies every token; a [`stream::StreamSession`] follows one
//!   conversation as the response streams in, each token costing one cached step.
//! - [`policy`] holds severities, strict/loose modes and the Gen output parser.
//!
//! Loaded models are immutable and shared through `Arc`; every per-conversation state (the
//! KV cache above all) belongs to the request or session, so a server can run many at once
//! without locks.

#![deny(missing_docs)]

pub mod checkpoint;
pub mod device;
pub mod error;
pub mod gen;
pub(crate) mod kernels;
pub mod model;
pub mod policy;
pub mod prompt;
pub mod stream;

pub use checkpoint::{Checkpoint, Variant};
pub use device::{LoadOptions, Precision};
pub use error::{Error, ErrorKind, Result};
pub use gen::{GenGuard, GenOptions, GenVerdict};
pub use kernels::{isa, Isa};
pub use policy::{Mode, Severity};
pub use prompt::{Conversation, Message, Role};
pub use stream::{StreamGuard, StreamSession};
