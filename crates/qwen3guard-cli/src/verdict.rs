//! `make-random --verdict`: a Gen checkpoint of a real shape whose greedy output on every
//! prompt is the well-formed verdict `Safety: Unsafe\nCategories: Violent<|im_end|>` (or the
//! `--verdict-text` given).
//!
//! Random weights never write `<|im_end|>`, so a benchmark on them decodes to its token cap
//! and the cost of a real moderation (a verdict of a known length, drafted or decoded,
//! stopping at the end token) cannot be measured. Here the weights are random as before
//! except for what carries the verdict, so every product still costs what a real
//! checkpoint's does:
//! - The embedding (tied to the LM head) gives every token a constant feature `C` and
//!   each token of the verdict chain one reserved feature of its own (its "slot").
//! - Layer 0 has two working heads whose queries and keys come from `C` alone, so their
//!   scores depend only on the distance between positions through RoPE: in query head 0
//!   (key/value head 0) every position attends to itself, in the first query head of
//!   key/value head 1 ("head 2" of the 0.6B shape) to the one before (its query is rotated back by
//!   one position's angle on the 32 fastest frequency pairs; the score margin to any other
//!   position is about 30, so the softmax picks one position). Their values copy the slots.
//! - The output projection maps the current token's slot (head 0), or for a token whose
//!   successor depends on context (the `:` after `Safety` and after `Categories`) the
//!   previous token's slot (the previous-position head), to the next token's slot, ten times larger than the
//!   current token's own, so that the tied LM head's largest logit is the next token.
//! - Every other layer's output projections, and every MLP's down projection, are zero,
//!   so the residual stream carries layer 0's result to the final norm unchanged.
//!
//! The rules are derived from the chain's tokens and checked before anything is written:
//! at every step, exactly the next token must be predicted.

use std::collections::HashMap;

use anyhow::{bail, Result};
use qwen3guard::checkpoint::ModelConfig;
use qwen3guard::prompt::PromptTokenizer;

/// The verdict the checkpoint writes unless `--verdict-text` names another.
pub const VERDICT: &str = "Safety: Unsafe\nCategories: Violent";
/// The end of the Gen template's generation prompt (thinking off), which precedes it.
const PROMPT_END: &str = "</think>\n\n";
/// The constant feature's value in every embedding row.
const CONSTANT: f32 = 0.5;
/// A verdict token's own slot value in its embedding row.
const SLOT: f32 = 2.0;
/// How much larger the predicted slot is than the current token's own.
const PREDICTED: f32 = 10.0 * SLOT;
/// The norm weight of layer 0's queries and keys: their length, hence the softmax's
/// sharpness.
const QK_NORM: f32 = 8.0;
/// RoPE frequency pairs the two working heads use (the fastest ones).
const PAIRS: usize = 32;
/// Half-width of the random values (`make-random`'s uniform init, std 0.02).
pub const RANDOM_HALF_WIDTH: f32 = 0.035;

/// What one tensor of the checkpoint becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Embedding,
    Query,
    Key,
    Value,
    Output,
    QueryKeyNorm,
    Silenced,
    Random,
}

/// The constructed weights' layout: slots, rules and sizes.
#[derive(Debug)]
pub struct Plan {
    hidden: usize,
    head_dim: usize,
    q_dim: usize,
    /// The query head that attends to the previous position: the first one reading key/value
    /// head 1.
    previous_head: usize,
    /// Slot of each verdict-chain token.
    slots: HashMap<u32, usize>,
    /// Head 0: the current token's slot -> the next token's slot.
    by_current: HashMap<usize, usize>,
    /// The previous-position head: the previous token's slot -> the next token's slot.
    by_previous: HashMap<usize, usize>,
    /// RoPE angle per position of each frequency pair.
    theta: Vec<f64>,
    /// The layer 0 output weight that turns a slot's normalised value into `PREDICTED`.
    gain: f32,
}

impl Plan {
    /// Derives the plan for `config` (a Gen checkpoint), its tokenizer and the verdict to
    /// write.
    pub fn new(config: &ModelConfig, tokenizer: &PromptTokenizer, verdict: &str) -> Result<Plan> {
        let c = &config.backbone;
        let mut chain = tokenizer.encode_rendered(PROMPT_END)?;
        chain.extend(tokenizer.encode_text(verdict)?);
        chain.extend(tokenizer.encode_rendered("<|im_end|>")?);
        if c.head_dim < 2 * PAIRS || c.num_attention_heads < 4 || c.num_key_value_heads < 2 {
            bail!("--verdict needs head_dim >= 64, 4 query heads and 2 key/value heads");
        }
        let mut slots = HashMap::new();
        for &id in &chain {
            let next = slots.len();
            slots.entry(id).or_insert(next);
        }
        // The slots and the constant feature are reserved in the hidden state.
        let reserved = slots.len() + 1;
        if c.hidden_size < 4 * reserved || c.head_dim < reserved {
            bail!("--verdict needs a hidden size of at least {}", 4 * reserved);
        }
        // Decoding starts at the prompt's last token (index 1 of the chain).
        let steps: Vec<(usize, usize, usize)> = (1..chain.len() - 1)
            .map(|t| (slots[&chain[t - 1]], slots[&chain[t]], slots[&chain[t + 1]]))
            .collect();
        let mut successors: HashMap<usize, Vec<usize>> = HashMap::new();
        for &(_, current, next) in &steps {
            successors.entry(current).or_default().push(next);
        }
        let (mut by_current, mut by_previous) = (HashMap::new(), HashMap::new());
        for &(previous, current, next) in &steps {
            if successors[&current].iter().all(|&n| n == next) {
                by_current.insert(current, next);
            } else if by_previous
                .insert(previous, next)
                .is_some_and(|n| n != next)
            {
                bail!("the verdict's tokens need more context than one previous token");
            }
        }
        for &(previous, current, next) in &steps {
            let predicted: Vec<usize> = [by_current.get(&current), by_previous.get(&previous)]
                .into_iter()
                .flatten()
                .copied()
                .collect();
            if predicted.is_empty() || predicted.iter().any(|&p| p != next) {
                bail!("the verdict's rules predict {predicted:?} where slot {next} follows");
            }
        }
        let theta = (0..c.head_dim / 2)
            .map(|i| c.rope_theta.powf(-2.0 * i as f64 / c.head_dim as f64))
            .collect();
        // A slot's value after layer 0's input norm: SLOT over the row's RMS, whose random
        // part has mean square (half-width^2 / 3) over the unreserved features.
        let random_square = RANDOM_HALF_WIDTH * RANDOM_HALF_WIDTH / 3.0;
        let square =
            random_square * (c.hidden_size - reserved) as f32 + CONSTANT * CONSTANT + SLOT * SLOT;
        let normalised = SLOT / (square / c.hidden_size as f32).sqrt();
        Ok(Plan {
            hidden: c.hidden_size,
            head_dim: c.head_dim,
            q_dim: c.num_attention_heads * c.head_dim,
            previous_head: c.num_attention_heads / c.num_key_value_heads,
            slots,
            by_current,
            by_previous,
            theta,
            gain: PREDICTED / normalised,
        })
    }

    /// The feature holding slot `s`; the constant feature is the last one.
    fn slot_feature(&self, s: usize) -> usize {
        self.hidden - 1 - self.slots.len() + s
    }

    fn constant_feature(&self) -> usize {
        self.hidden - 1
    }

    fn reserved(&self, feature: usize) -> bool {
        feature >= self.hidden - 1 - self.slots.len()
    }

    /// The part tensor `name` plays (looked up once per tensor, not per element).
    pub fn part(name: &str) -> Part {
        let layer_zero = name.starts_with("model.layers.0.");
        match name {
            "model.embed_tokens.weight" | "lm_head.weight" => Part::Embedding,
            _ if name.ends_with("mlp.down_proj.weight") => Part::Silenced,
            _ if name.ends_with("self_attn.o_proj.weight") && !layer_zero => Part::Silenced,
            _ if !layer_zero => Part::Random,
            _ if name.ends_with("q_proj.weight") => Part::Query,
            _ if name.ends_with("k_proj.weight") => Part::Key,
            _ if name.ends_with("v_proj.weight") => Part::Value,
            _ if name.ends_with("o_proj.weight") => Part::Output,
            _ if name.ends_with("q_norm.weight") || name.ends_with("k_norm.weight") => {
                Part::QueryKeyNorm
            }
            _ => Part::Random,
        }
    }

    /// Element `index` of a tensor playing `part` (row-major, `cols` columns), given the
    /// value `random` it has in a plain random checkpoint.
    pub fn value(&self, part: Part, cols: usize, index: usize, random: f32) -> f32 {
        let (row, col) = (index / cols.max(1), index % cols.max(1));
        let d = self.head_dim;
        match part {
            Part::Random => random,
            Part::Silenced => 0.0,
            Part::QueryKeyNorm => QK_NORM,
            Part::Embedding => {
                if col == self.constant_feature() {
                    CONSTANT
                } else if self.reserved(col) {
                    match self.slots.get(&(row as u32)) {
                        Some(&s) if self.slot_feature(s) == col => SLOT,
                        _ => 0.0,
                    }
                } else {
                    random
                }
            }
            // Rows of head h are h*d..(h+1)*d; feature f of a head pairs with f + d/2.
            Part::Query | Part::Key => {
                let (head, f) = (row / d, row % d);
                let working = match part {
                    Part::Query => head == 0 || head == self.previous_head,
                    _ => head == 0 || head == 1,
                };
                if !working {
                    return random;
                }
                if col != self.constant_feature() {
                    return 0.0;
                }
                let (pair, second) = (f % (d / 2), f >= d / 2);
                if pair >= PAIRS {
                    return 0.0;
                }
                // Keys and head 0's queries: (1, 0). The previous-position head's queries:
                // rotated back by one position's angle, so that its score peaks one
                // position earlier.
                let angle = if part == Part::Query && head == self.previous_head {
                    -self.theta[pair]
                } else {
                    0.0
                };
                (if second { angle.sin() } else { angle.cos() }) as f32
            }
            Part::Value => {
                let (head, f) = (row / d, row % d);
                if head > 1 {
                    random
                } else if f < self.slots.len() && col == self.slot_feature(f) {
                    1.0
                } else {
                    0.0
                }
            }
            Part::Output => {
                debug_assert_eq!(cols, self.q_dim);
                let (head, s) = (col / d, col % d);
                let rule = if head == 0 {
                    self.by_current.get(&s)
                } else if head == self.previous_head {
                    self.by_previous.get(&s)
                } else {
                    None
                };
                match rule {
                    Some(&next) if row == self.slot_feature(next) => self.gain,
                    _ => 0.0,
                }
            }
        }
    }
}
