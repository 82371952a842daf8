//! Evaluation of Qwen3Guard: the official metrics, prediction-file formats and reports.
//!
//! The pieces, bottom up:
//! - [`Severity`] and [`Mode`] (strict / loose), the engine's own types, re-exported in [`risk`];
//! - [`debounce::consecutive_unsafe`], the official rule that turns per-token Stream verdicts
//!   into one response verdict and a detection position;
//! - [`metrics::Confusion`] and [`metrics::Prf`], precision / recall / F1 of the unsafe class;
//! - [`latency`], the detection-latency bins of the `_loc` splits;
//! - [`predictions`], the three official predictions formats and a JSONL reader whose errors
//!   name the line and the field;
//! - [`score`], which applies the official rules to a file and yields a [`ScoreReport`]
//!   (serializable to the CLI's JSON, printable as a table);
//! - [`curve`] (threshold sweeps over per-sample scores) and [`report`] (Markdown and
//!   hand-written SVG charts), written to a directory by [`publish`];
//! - [`dataset`] (benchmark files as published, turned into conversations with labels) and
//!   [`run`] (a Gen or Stream checkpoint over a dataset, writing the predictions formats,
//!   resumably).
//!
//! `evaluation.md` in the shared reference describes the official definitions; each module
//! says where and why it departs from the official scripts' quirks.

#![deny(missing_docs)]

pub mod curve;
pub mod dataset;
pub mod debounce;
pub mod error;
pub mod latency;
pub mod metrics;
pub mod predictions;
pub mod publish;
pub mod report;
pub mod resume;
pub mod risk;
pub mod run;
pub mod score;

pub use error::{EvalError, Result};
pub use risk::{Mode, Severity};
pub use score::{score_file, score_reader, Kind, ScoreReport};
