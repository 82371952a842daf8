//! What a Gen checkpoint fixes besides its weights: the prompt rendering, the tokens that
//! stop an answer, the forced `Safety:` start and the label and category tokens read after
//! it, and the parsing of an answer into a verdict.
//!
//! [`GenGuard`](super::GenGuard) runs the model in-process on top of it; a server that
//! sends the forward passes elsewhere (an OpenAI-compatible completions server) loads only
//! this ([`GenSpec::load`] reads no weights), so that the rendering the model sees, the
//! positions the scores are read at and the parsing of the answer stay this library's.

use crate::checkpoint::{Checkpoint, Variant};
use crate::error::{Error, Result};
use crate::policy::{parse_gen_output, Severity, CATEGORIES};
use crate::prompt::{Conversation, Prompter, RenderOptions, RenderedPrompt, Task};

use super::{GenVerdict, Scores};

/// A Gen checkpoint's tokenizer-level facts, loaded without its weights.
pub struct GenSpec {
    prompter: Prompter,
    max_positions: usize,
    stop_ids: Vec<u32>,
    safety_prefix: Vec<u32>,
    label_ids: [u32; 3],
}

impl std::fmt::Debug for GenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenSpec")
            .field("max_positions", &self.max_positions)
            .field("stop_ids", &self.stop_ids)
            .field("label_ids", &self.label_ids)
            .finish()
    }
}

/// The forced answer start after which category scores are read, and the first token of
/// each category name the task allows.
#[derive(Debug, Clone)]
pub struct CategoryPrompt {
    /// `Safety: <label>\nCategories:` as token ids.
    pub forced_ids: Vec<u32>,
    /// Each allowed category with the first token of its name after the forced start
    /// (distinct tokens, checked).
    pub first_ids: Vec<(&'static str, u32)>,
}

impl GenSpec {
    /// Loads the template, tokenizer and config of a Gen checkpoint (no weights).
    pub fn load(checkpoint: &Checkpoint) -> Result<Self> {
        if checkpoint.variant() != Variant::Gen {
            return Err(Error::WrongVariant {
                expected: Variant::Gen.name(),
                found: checkpoint.variant().name(),
                needed: "generative moderation",
            });
        }
        Self::new(
            checkpoint.prompter()?,
            checkpoint.config().backbone.max_position_embeddings,
        )
    }

    /// The spec of a checkpoint whose template and tokenizer `prompter` holds and whose
    /// context is `max_positions` long.
    pub(super) fn new(prompter: Prompter, max_positions: usize) -> Result<Self> {
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
        Ok(GenSpec {
            prompter,
            max_positions,
            stop_ids,
            safety_prefix,
            label_ids,
        })
    }

    /// The prompt builder (template and tokenizer).
    pub fn prompter(&self) -> &Prompter {
        &self.prompter
    }

    /// The model's context length in positions.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The tokens that end an answer; the first is `<|im_end|>`.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// `Safety:` as the model writes it.
    pub fn safety_prefix(&self) -> &[u32] {
        &self.safety_prefix
    }

    /// The first tokens of ` Safe`, ` Unsafe`, ` Controversial` after `Safety:`.
    pub fn label_ids(&self) -> [u32; 3] {
        self.label_ids
    }

    /// Renders `conversation` exactly as the model will see it.
    pub fn render(&self, conversation: &Conversation) -> Result<RenderedPrompt> {
        self.prompter.render(conversation, RenderOptions::default())
    }

    /// The prompt's ids, refused when no position would remain for the first generated
    /// token.
    pub fn prompt_ids(&self, conversation: &Conversation) -> Result<Vec<u32>> {
        let ids = self.render(conversation)?.token_ids;
        if ids.len() + 1 > self.max_positions {
            return Err(Error::ContextTooLong {
                tokens: ids.len() + 1,
                max: self.max_positions,
            });
        }
        Ok(ids)
    }

    /// The label scores from the three label tokens' logits (or log-probabilities: a
    /// softmax over the whole vocabulary renormalised over the three labels equals a
    /// softmax over their logits). `logit` gives `None` for a token it does not know,
    /// which counts as probability 0.
    pub fn label_scores(&self, logit: impl Fn(u32) -> Option<f32>) -> Scores {
        Scores::from_logits(
            self.label_ids
                .map(|id| logit(id).unwrap_or(f32::NEG_INFINITY)),
        )
    }

    /// The forced start `Safety: <label>\nCategories:` for `task` and the first token of
    /// every category name the task allows (all but `Jailbreak` for responses).
    pub fn category_prompt(&self, task: Task, label: Severity) -> Result<CategoryPrompt> {
        let tokenizer = self.prompter.tokenizer();
        let forced = format!("Safety: {}\nCategories:", label.as_str());
        let forced_ids = tokenizer.encode_text(&forced)?;
        let mut first_ids: Vec<(&'static str, u32)> = Vec::with_capacity(CATEGORIES.len());
        for name in CATEGORIES
            .iter()
            .copied()
            .filter(|c| task == Task::Prompt || *c != "Jailbreak")
        {
            let with_name = tokenizer.encode_text(&format!("{forced} {name}"))?;
            match with_name.strip_prefix(forced_ids.as_slice()) {
                Some([first, ..]) if !first_ids.iter().any(|(_, id)| id == first) => {
                    first_ids.push((name, *first))
                }
                Some([_, ..]) => {
                    return Err(Error::Unsupported(format!(
                        "category {name:?} starts with the same token as another category; \
                         first-token scores would be ambiguous"
                    )))
                }
                _ => {
                    return Err(Error::Tokenizer(format!(
                    "{forced:?} followed by {name:?} does not tokenize as the prefix then the name"
                )))
                }
            }
        }
        Ok(CategoryPrompt {
            forced_ids,
            first_ids,
        })
    }

    /// The verdict of an answer: `generated` (the stop token included when one was
    /// produced) decoded and parsed, with `scores` read after `Safety:`. In verdict-only
    /// mode the label is the scores' best, decoding having only added categories.
    pub fn verdict(
        &self,
        generated: Vec<u32>,
        scores: Scores,
        prompt_tokens: usize,
        verdict_only: bool,
    ) -> Result<GenVerdict> {
        let generated_text = self.prompter.tokenizer().decode(&generated, true)?;
        let mut parsed = parse_gen_output(&generated_text);
        if verdict_only {
            parsed.safety = Some(scores.best());
        }
        Ok(GenVerdict {
            safety: parsed.safety,
            categories: parsed.categories,
            refusal: parsed.refusal,
            scores,
            generated_text,
            generated_token_ids: generated,
            prompt_tokens,
            // The decoder that ran the answer sets it.
            decode_passes: 0,
        })
    }
}
