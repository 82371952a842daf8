//! Flags shared by the model commands, and turning them into engine types.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use qwen3guard::{Checkpoint, Conversation, LoadOptions, Precision};

/// Which checkpoint to load and how.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Checkpoint directory (Hugging Face layout) or Hub repo id such as
    /// Qwen/Qwen3Guard-Gen-0.6B (downloaded into the Hugging Face cache on first use).
    #[arg(long, value_name = "DIR|REPO")]
    pub model: Option<String>,

    /// Precision: f32 (the reference's), bf16 (bf16 weights, native bf16 dot products) or
    /// q8 (8-bit weights and key/value cache; activations quantized per block of 64).
    #[arg(
        long,
        default_value = "f32",
        value_name = "f32|bf16|q8",
        env = "QWEN3GUARD_DTYPE"
    )]
    pub dtype: Precision,
}

impl ModelArgs {
    /// Opens the checkpoint, `default` when no `--model` was given.
    pub fn checkpoint(&self, default: &str) -> Result<Checkpoint> {
        let spec = self.model.as_deref().unwrap_or(default);
        Ok(Checkpoint::resolve(spec, true)?)
    }

    /// The load options.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            precision: self.dtype,
        }
    }
}

/// The conversation: a prompt (and response) on the command line, or a messages file.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// The user's message.
    #[arg(
        long,
        conflicts_with = "messages",
        required_unless_present = "messages"
    )]
    pub prompt: Option<String>,

    /// The assistant's answer to judge (response moderation).
    #[arg(long, requires = "prompt")]
    pub response: Option<String>,

    /// A JSON file: [{"role": "system"|"user"|"assistant", "content": "..."}, ...].
    #[arg(long, value_name = "FILE.json")]
    pub messages: Option<PathBuf>,
}

impl InputArgs {
    /// The validated conversation.
    pub fn conversation(&self) -> Result<Conversation> {
        match (&self.prompt, &self.messages) {
            (Some(prompt), _) => Ok(Conversation::from_prompt(prompt, self.response.as_deref())),
            (None, Some(path)) => Ok(Conversation::from_json_file(path)?),
            (None, None) => anyhow::bail!("give --prompt or --messages"),
        }
    }
}
