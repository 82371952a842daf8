//! `qwen3guard make-random`: a checkpoint of a published shape with random weights.
//!
//! Compute cost does not depend on weight values, so benchmarks on these checkpoints
//! measure what a real checkpoint of that size costs, without downloading one. Tokenizer
//! files and the non-shape config keys (label maps, template) come from a small checkpoint
//! of the same variant (`--like`, by default the test fixtures).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use half::bf16;
use qwen3guard::checkpoint::ModelConfig;
use qwen3guard::prompt::PromptTokenizer;
use serde_json::Value;

use crate::verdict::{Plan, RANDOM_HALF_WIDTH, VERDICT};

/// Arguments of `make-random`.
#[derive(Debug, Args)]
pub struct RandomArgs {
    /// Gen or Stream layout.
    #[arg(long, value_enum)]
    variant: VariantArg,
    /// A size from the shapes file: 0.6B, 4B or 8B.
    #[arg(long, default_value = "0.6B")]
    size: String,
    /// The published shapes (model-shapes.json of the shared reference).
    #[arg(long, default_value = "../shared/reference/model-shapes.json")]
    shapes: PathBuf,
    /// A checkpoint of the same variant to take tokenizer files and other config keys
    /// from; defaults to the repository's test fixture.
    #[arg(long)]
    like: Option<PathBuf>,
    /// Where to write the checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Gen only: arrange the weights so that greedy decoding writes the verdict
    /// `Safety: Unsafe` / `Categories: Violent` on every prompt (the rest stays random), so
    /// that a full moderation can be measured (see verdict.rs).
    #[arg(long)]
    verdict: bool,
    /// With --verdict, the answer to write instead (lines separated by `\n`), such as
    /// `Safety: Safe\nCategories: None\nRefusal: Yes`: checkpoints whose verdict is known
    /// by construction, for tests of what is built on verdicts (rewards, say).
    #[arg(long, requires = "verdict", value_name = "TEXT")]
    verdict_text: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VariantArg {
    Gen,
    Stream,
}

/// Runs `make-random`.
pub fn run(args: &RandomArgs) -> Result<()> {
    if args.verdict && matches!(args.variant, VariantArg::Stream) {
        bail!("--verdict makes a Gen checkpoint; use --variant gen");
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qwen3guard/tests/fixtures");
    let like = args.like.clone().unwrap_or_else(|| match args.variant {
        VariantArg::Gen => fixtures.join("gen-tied"),
        VariantArg::Stream => fixtures.join("stream"),
    });
    let shapes: Value = read_json(&args.shapes)?;
    let shape = shapes
        .get(&args.size)
        .with_context(|| format!("{} has no size {:?}", args.shapes.display(), args.size))?;
    let mut config: Value = read_json(&like.join("config.json"))?;
    let Some(object) = config.as_object_mut() else {
        bail!("{}: config.json is not an object", like.display());
    };
    let common = [
        ("vocab_size", Value::from(151_936)),
        ("head_dim", Value::from(128)),
        ("num_key_value_heads", Value::from(8)),
        ("rope_theta", Value::from(1_000_000)),
        ("rms_norm_eps", Value::from(1e-6)),
        ("max_position_embeddings", Value::from(40_960)),
    ];
    for (key, value) in common {
        object.insert(key.to_string(), value);
    }
    for key in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "tie_word_embeddings",
    ] {
        let value = shape
            .get(key)
            .with_context(|| format!("shape {} lacks {key}", args.size))?;
        object.insert(key.to_string(), value.clone());
    }
    if let VariantArg::Stream = args.variant {
        if let Some(extra) = shapes.get("stream_0.6B_extra").and_then(Value::as_object) {
            for (key, value) in extra {
                object.insert(key.clone(), value.clone());
            }
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let config_text = serde_json::to_string_pretty(&config)?;
    std::fs::write(args.out.join("config.json"), &config_text)?;
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let source = like.join(file);
        if source.is_file() {
            std::fs::copy(&source, args.out.join(file))
                .with_context(|| format!("copying {}", source.display()))?;
        }
    }
    let parsed = ModelConfig::from_json(&config_text, &args.out.join("config.json"))?;
    // (A Stream `--verdict` was refused at the start.)
    let plan = if args.verdict {
        let tokenizer = PromptTokenizer::from_file(&args.out.join("tokenizer.json"))?;
        // A shell hands `\n` over as two characters; the verdict's lines need the newline.
        let text = args
            .verdict_text
            .as_deref()
            .unwrap_or(VERDICT)
            .replace("\\n", "\n");
        Some(Plan::new(&parsed, &tokenizer, &text)?)
    } else {
        None
    };
    write_weights(
        &parsed,
        &args.out.join("model.safetensors"),
        args.seed,
        plan.as_ref(),
    )?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// Small random values (std about 0.02, as at initialisation) and unit norm weights, so
/// activations stay finite through every layer; with a `plan`, the values it constructs.
fn write_weights(config: &ModelConfig, path: &Path, seed: u64, plan: Option<&Plan>) -> Result<()> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*: fast, and quality is irrelevant here.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = config
        .tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let count: usize = shape.iter().product();
            let norm = name.ends_with("norm.weight") || name.ends_with("layernorm.weight");
            let (part, cols) = (Plan::part(&name), shape.last().copied().unwrap_or(1));
            let mut bytes = Vec::with_capacity(count * 2);
            for index in 0..count {
                let mut value = if norm {
                    1.0
                } else {
                    // Uniform in [-w, w): std 0.02.
                    ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * RANDOM_HALF_WIDTH
                };
                if let Some(plan) = plan {
                    value = plan.value(part, cols, index, value);
                }
                bytes.extend_from_slice(&bf16::from_f32(value).to_le_bytes());
            }
            (name, shape, bytes)
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::BF16,
                shape.clone(),
                bytes,
            )?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, path)?;
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
