//! `qwen3guard render`: the exact text and token ids the model reads.

use anyhow::Result;
use clap::Args;
use qwen3guard::Variant;
use serde::Serialize;

use crate::args::{InputArgs, ModelArgs};
use crate::moderate::DEFAULT_GEN_MODEL;

/// Arguments of `render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    /// Print as JSON: {"text": ..., "token_ids": [...]}.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Rendered<'a> {
    text: &'a str,
    token_ids: &'a [u32],
}

/// Runs `render`: Gen checkpoints render the moderation prompt, Stream checkpoints the
/// conversation as streamed (Qwen3 template, thinking off).
pub fn run(args: &RenderArgs) -> Result<()> {
    let conversation = args.input.conversation()?;
    let checkpoint = args.model.checkpoint(DEFAULT_GEN_MODEL)?;
    let prompter = checkpoint.prompter()?;
    let (text, ids) = match checkpoint.variant() {
        Variant::Gen => {
            let rendered = prompter.render(&conversation, Default::default())?;
            (rendered.text, rendered.token_ids)
        }
        Variant::Stream => {
            let options = qwen3guard::prompt::RenderOptions {
                add_generation_prompt: false,
                enable_thinking: Some(false),
            };
            let rendered = prompter.render(&conversation, options)?;
            (rendered.text, rendered.token_ids)
        }
    };
    if args.json {
        let doc = Rendered {
            text: &text,
            token_ids: &ids,
        };
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        println!("{text}");
        println!("({} tokens)", ids.len());
    }
    Ok(())
}
