//! Category probabilities for a Gen verdict, read from the model rather than parsed.
//!
//! Gen writes its categories as text, so the parsed verdict says only which ones it chose.
//! A caller that needs a score per category (an OpenAI-style `category_scores`) gets it
//! here: the answer is teacher-forced up to `Categories:` after the given label, and each
//! category's score is the probability (softmax over the whole vocabulary) of the first
//! token of its name at the next position, i.e. the probability that the model names that
//! category first. The names' first tokens are distinct (checked), so the scores of the
//! categories and of `None` never share probability mass and sum to at most 1.

use crate::error::{Error, Result};
use crate::policy::Severity;
use crate::prompt::Conversation;

use super::{CategoryPrompt, GenGuard};

/// One category's probability of being written first on the `Categories:` line.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CategoryScore {
    /// The category as Gen writes it (see [`CATEGORIES`]).
    pub category: &'static str,
    /// Its probability, in `[0, 1]`.
    pub probability: f32,
}

impl GenGuard {
    /// The probability of each category the task allows (every one for prompts, all but
    /// `Jailbreak` for responses) being named first after `Safety: <label>`. One forward
    /// pass over the prompt (after the cached preamble) and the forced answer start.
    pub fn category_scores(
        &self,
        conversation: &Conversation,
        label: Severity,
    ) -> Result<Vec<CategoryScore>> {
        let m = &*self.model;
        let task = conversation.task();
        let ids = self.render(conversation)?.token_ids;
        let CategoryPrompt {
            forced_ids,
            first_ids,
        } = m.spec.category_prompt(task, label)?;
        let max = m.spec.max_positions();
        let needed = ids.len() + forced_ids.len();
        if needed > max {
            return Err(Error::ContextTooLong {
                tokens: needed,
                max,
            });
        }
        let (mut cache, reused) = self.start_cache(&ids, task, true)?;
        let mut feed = ids[reused..].to_vec();
        feed.extend(&forced_ids);
        let logits = m.logits(&feed, &mut cache, 1)?;
        let row = logits
            .first()
            .ok_or_else(|| Error::Internal("the forced pass gave no logits".into()))?;
        let ids: Vec<u32> = first_ids.iter().map(|&(_, id)| id).collect();
        let probs = softmax_at(row, &ids);
        Ok(first_ids
            .into_iter()
            .map(|(category, _)| category)
            .zip(probs)
            .map(|(category, probability)| CategoryScore {
                category,
                probability,
            })
            .collect())
    }
}

/// Softmax over the whole of `logits` (in f64), read at `ids` only.
fn softmax_at(logits: &[f32], ids: &[u32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    ids.iter()
        .map(|&id| {
            let x = logits.get(id as usize).copied().unwrap_or(f32::MIN);
            (((x - max) as f64).exp() / sum) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::device::LoadOptions;
    use crate::policy::CATEGORIES;

    fn guard() -> GenGuard {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen-tied");
        GenGuard::load(&Checkpoint::open(&dir).unwrap(), &LoadOptions::default()).unwrap()
    }

    /// Scores are probabilities of distinct tokens: each in [0, 1], together at most 1,
    /// one per category the task allows, and they depend on the forced label.
    #[test]
    fn category_scores_are_probabilities() {
        let guard = guard();
        let prompt = Conversation::from_prompt("How can I make a bomb?", None);
        let unsafe_ = guard.category_scores(&prompt, Severity::Unsafe).unwrap();
        assert_eq!(unsafe_.len(), CATEGORIES.len());
        let sum: f32 = unsafe_.iter().map(|s| s.probability).sum();
        assert!(sum <= 1.0 + 1e-5, "{sum}");
        assert!(unsafe_.iter().all(|s| (0.0..=1.0).contains(&s.probability)));
        assert!(unsafe_.iter().any(|s| s.probability > 0.0));
        let safe = guard.category_scores(&prompt, Severity::Safe).unwrap();
        assert_ne!(safe, unsafe_);
        let response = Conversation::from_prompt("Hi", Some("Hello!"));
        let scores = guard.category_scores(&response, Severity::Unsafe).unwrap();
        assert_eq!(scores.len(), CATEGORIES.len() - 1);
        assert!(scores.iter().all(|s| s.category != "Jailbreak"));
    }

    #[test]
    fn softmax_reads_the_full_distribution() {
        let p = softmax_at(&[0.0, 0.0, 0.0, 0.0], &[1, 3]);
        assert_eq!(p, vec![0.25, 0.25]);
    }
}
