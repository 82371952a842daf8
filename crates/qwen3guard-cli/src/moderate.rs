//! `qwen3guard moderate`: Gen's verdict on the last message.

use anyhow::Result;
use clap::Args;
use qwen3guard::{GenGuard, GenOptions};

use crate::args::{InputArgs, ModelArgs};

/// The Gen checkpoint used when `--model` is not given.
pub const DEFAULT_GEN_MODEL: &str = "Qwen/Qwen3Guard-Gen-0.6B";

/// Arguments of `moderate`.
#[derive(Debug, Args)]
pub struct ModerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    /// Most tokens to generate.
    #[arg(long, default_value_t = qwen3guard::gen::DEFAULT_MAX_NEW_TOKENS, env = "QWEN3GUARD_MAX_NEW_TOKENS")]
    max_new_tokens: usize,
    /// Severity and scores from a single forward pass, without decoding the answer;
    /// categories (and refusal) are decoded only when the label is not Safe.
    #[arg(long, env = "QWEN3GUARD_VERDICT_ONLY")]
    verdict_only: bool,
    /// With --verdict-only, decode categories even for a Safe label.
    #[arg(long, requires = "verdict_only")]
    categories: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `moderate`.
pub fn run(args: &ModerateArgs) -> Result<()> {
    let conversation = args.input.conversation()?;
    let checkpoint = args.model.checkpoint(DEFAULT_GEN_MODEL)?;
    let guard = GenGuard::load(&checkpoint, &args.model.load_options())?;
    let options = GenOptions {
        max_new_tokens: args.max_new_tokens,
        verdict_only: args.verdict_only,
        categories: args.categories,
        ..GenOptions::default()
    };
    let verdict = guard.moderate(&conversation, &options)?;
    if args.json {
        println!("{}", serde_json::to_string(&verdict)?);
        return Ok(());
    }
    let safety = verdict.safety.map_or("unparsed", |s| s.as_str());
    let categories = if verdict.categories.is_empty() {
        "None".to_string()
    } else {
        verdict.categories.join(", ")
    };
    let refusal = match verdict.refusal {
        Some(true) => "  refusal: yes",
        Some(false) => "  refusal: no",
        None => "",
    };
    let s = verdict.scores;
    let mut line = format!(
        "{safety}  categories: {categories}{refusal}  (P safe {:.3}, unsafe {:.3}, controversial {:.3})",
        s.safe, s.unsafe_, s.controversial
    );
    if verdict.safety.is_none() && !args.verdict_only {
        // The start of what was written instead, on the same line; --json has all of it.
        line.push_str(&format!(
            "  model output: {:?}",
            preview(&verdict.generated_text, 40)
        ));
    }
    println!("{line}");
    Ok(())
}

/// The first `max_chars` characters of `text`, with `…` if there were more.
fn preview(text: &str, max_chars: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max_chars).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}
