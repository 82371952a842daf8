//! Qwen3Guard-Gen: the verdict written as text, decoded greedily, plus label scores.

use std::sync::Arc;

use candle_core::Tensor;
use serde::Serialize;

use crate::checkpoint::{Checkpoint, Variant};
use crate::device::LoadOptions;
use crate::error::{Error, Result};
use crate::model::{Backbone, KvCache, LmHead};
use crate::policy::{parse_gen_output, Severity};
use crate::prompt::{Conversation, Prompter, RenderOptions, RenderedPrompt};

/// What the reference decodes at most.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 128;

/// Per-request settings.
#[derive(Debug, Clone, Copy)]
pub struct GenOptions {
    /// Upper bound on generated tokens (the stop token included).
    pub max_new_tokens: usize,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
        }
    }
}

/// Probabilities of the three labels at the position after `Safety:`, renormalised over
/// the three.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    /// P(Safe).
    #[serde(rename = "Safe")]
    pub safe: f32,
    /// P(Unsafe).
    #[serde(rename = "Unsafe")]
    pub unsafe_: f32,
    /// P(Controversial).
    #[serde(rename = "Controversial")]
    pub controversial: f32,
}

/// Gen's verdict on a conversation.
#[derive(Debug, Clone, Serialize)]
pub struct GenVerdict {
    /// The parsed `Safety:` level; `None` if the output could not be parsed.
    pub safety: Option<Severity>,
    /// The parsed categories (empty for `None`).
    pub categories: Vec<String>,
    /// For responses, whether the assistant refused; `None` for prompts or if absent.
    pub refusal: Option<bool>,
    /// Label probabilities (teacher-forced after `Safety:`).
    pub scores: Scores,
    /// The decoded output, special tokens skipped.
    pub generated_text: String,
    /// The generated ids, the stop token included when one was produced.
    pub generated_token_ids: Vec<u32>,
    /// Length of the rendered prompt in tokens.
    pub prompt_tokens: usize,
}

/// The model and everything fixed per checkpoint.
struct GenModel {
    backbone: Backbone,
    lm_head: LmHead,
    prompter: Prompter,
    stop_ids: Vec<u32>,
    /// `Safety:` as the model writes it.
    safety_prefix: Vec<u32>,
    /// First token of ` Safe`, ` Unsafe`, ` Controversial` after the prefix.
    label_ids: [u32; 3],
}

/// A loaded Gen checkpoint. Cheap to clone and safe to share between threads: each call
/// owns its cache.
#[derive(Clone)]
pub struct GenGuard {
    model: Arc<GenModel>,
}

impl GenGuard {
    /// Loads a Gen checkpoint.
    pub fn load(checkpoint: &Checkpoint, options: &LoadOptions) -> Result<Self> {
        if checkpoint.variant() != Variant::Gen {
            return Err(Error::WrongVariant {
                expected: Variant::Gen.name(),
                found: checkpoint.variant().name(),
                needed: "generative moderation",
            });
        }
        let cfg = &checkpoint.config().backbone;
        let weights = checkpoint.weights(&options.device()?, options.precision.dtype())?;
        let backbone = Backbone::new(cfg, &weights)?;
        let lm_head = LmHead::new(cfg, &weights, &backbone)?;
        let prompter = checkpoint.prompter()?;
        let tokenizer = prompter.tokenizer();
        let stop_ids: Vec<u32> = ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|m| tokenizer.marker_id(m))
            .collect();
        if stop_ids.is_empty() {
            return Err(Error::Tokenizer(
                "the tokenizer has no <|im_end|> token to stop generation".into(),
            ));
        }
        let safety_prefix = tokenizer.encode_text("Safety:")?;
        let label_id = |label: &str| -> Result<u32> {
            let ids = tokenizer.encode_text(&format!("Safety: {label}"))?;
            match ids.strip_prefix(safety_prefix.as_slice()) {
                Some([first, ..]) => Ok(*first),
                _ => Err(Error::Tokenizer(format!(
                    "\"Safety: {label}\" does not tokenize as \"Safety:\" followed by the label"
                ))),
            }
        };
        let label_ids = [
            label_id("Safe")?,
            label_id("Unsafe")?,
            label_id("Controversial")?,
        ];
        Ok(GenGuard {
            model: Arc::new(GenModel {
                backbone,
                lm_head,
                prompter,
                stop_ids,
                safety_prefix,
                label_ids,
            }),
        })
    }

    /// The prompt builder (template and tokenizer).
    pub fn prompter(&self) -> &Prompter {
        &self.model.prompter
    }

    /// Renders `conversation` exactly as the model will see it.
    pub fn render(&self, conversation: &Conversation) -> Result<RenderedPrompt> {
        self.model
            .prompter
            .render(conversation, RenderOptions::default())
    }

    /// Moderates the last message of `conversation`.
    pub fn moderate(
        &self,
        conversation: &Conversation,
        options: &GenOptions,
    ) -> Result<GenVerdict> {
        let m = &*self.model;
        let prompt = self.render(conversation)?;
        let max = m.backbone.config().max_position_embeddings;
        // One position must remain for the first generated token.
        if prompt.token_ids.len() + 1 > max {
            return Err(Error::ContextTooLong {
                tokens: prompt.token_ids.len() + 1,
                max,
            });
        }
        let mut cache = m.backbone.new_cache();
        let mut logits = self.next_logits(&prompt.token_ids, &mut cache)?;
        let mut generated: Vec<u32> = Vec::new();
        let mut scores = None;
        while generated.len() < options.max_new_tokens {
            if generated.len() == m.safety_prefix.len() && generated == m.safety_prefix {
                // Greedy decoding wrote exactly `Safety:`: these are the teacher-forced
                // logits, so no extra forward is needed.
                scores = Some(m.label_scores(&logits));
            }
            let next = argmax(&logits);
            generated.push(next);
            if m.stop_ids.contains(&next) || cache.len() >= max {
                break;
            }
            logits = self.next_logits(&[next], &mut cache)?;
        }
        let scores = match scores {
            Some(scores) => scores,
            None => {
                cache.truncate(prompt.token_ids.len());
                let logits = self.next_logits(&m.safety_prefix, &mut cache)?;
                m.label_scores(&logits)
            }
        };
        let generated_text = m.prompter.tokenizer().decode(&generated, true)?;
        let parsed = parse_gen_output(&generated_text);
        Ok(GenVerdict {
            safety: parsed.safety,
            categories: parsed.categories,
            refusal: parsed.refusal,
            scores,
            generated_text,
            generated_token_ids: generated,
            prompt_tokens: prompt.token_ids.len(),
        })
    }

    /// Runs `ids` after `cache` and returns the logits at the last of them.
    fn next_logits(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let m = &*self.model;
        let hidden = m.backbone.forward(ids, cache)?;
        let last = hidden.narrow(0, ids.len() - 1, 1)?;
        last_row(&m.lm_head.forward(&last)?)
    }

    /// Final-norm hidden states and logits at the last prompt position; for parity tests
    /// and diagnostics.
    pub fn prompt_outputs(&self, ids: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let m = &*self.model;
        let mut cache = m.backbone.new_cache();
        let hidden = m.backbone.forward(ids, &mut cache)?;
        let last = hidden.narrow(0, ids.len() - 1, 1)?;
        Ok((last_row(&last)?, last_row(&m.lm_head.forward(&last)?)?))
    }
}

impl GenModel {
    /// Softmax over the full vocabulary, then renormalised over the three labels, equals a
    /// softmax over the three labels' logits; that is what is computed.
    fn label_scores(&self, logits: &[f32]) -> Scores {
        let l = self
            .label_ids
            .map(|id| logits.get(id as usize).copied().unwrap_or(f32::MIN));
        let max = l.iter().copied().fold(f32::MIN, f32::max);
        let e = l.map(|x| ((x - max) as f64).exp());
        let sum: f64 = e.iter().sum();
        Scores {
            safe: (e[0] / sum) as f32,
            unsafe_: (e[1] / sum) as f32,
            controversial: (e[2] / sum) as f32,
        }
    }
}

fn last_row(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?)
}

/// Index of the largest logit; the first one on ties, as `torch.argmax` does.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}
