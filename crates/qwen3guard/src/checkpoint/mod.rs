//! Opening a checkpoint: resolve a directory or repo id, read its config, map its weights.

mod config;
pub mod hub;
mod rows;
mod weights;

use std::path::{Path, PathBuf};

pub use config::{GuardHeadsConfig, LabelMap, ModelConfig, Qwen3Config, Variant};
pub use rows::FileRows;
pub use weights::Weights;

use crate::device::LoadOptions;
use crate::error::{Error, Result};
use crate::prompt::Prompter;

/// A checkpoint directory whose config has been read and validated.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    config: ModelConfig,
}

impl Checkpoint {
    /// Resolves `spec`: an existing directory is used as is; otherwise `owner/name` is
    /// fetched from the Hugging Face Hub into its cache (progress bars if `progress`).
    pub fn resolve(spec: &str, progress: bool) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Self::open(path);
        }
        if hub::looks_like_repo_id(spec) {
            return Self::open(&hub::fetch(spec, progress)?);
        }
        Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such directory, and not a Hugging Face repo id (owner/name)",
            ),
        ))
    }

    /// Opens a local checkpoint directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// The directory the files are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The validated config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Gen or Stream.
    pub fn variant(&self) -> Variant {
        self.config.variant
    }

    /// Maps the weight files for loading as `options` say.
    pub fn weights(&self, options: &LoadOptions) -> Result<Weights> {
        Weights::open(&self.dir, options)
    }

    /// The chat template and tokenizer.
    pub fn prompter(&self) -> Result<Prompter> {
        Prompter::from_dir(&self.dir)
    }
}
