//! Running several moderations' steps in shared forward passes.
//!
//! Each round takes the next step of every unfinished [`Decoder`], runs their tokens
//! through the layers in one pass ([`Backbone::forward_batch_last`]) and the rows that need
//! logits through one LM-head product, so a round reads the weights once however many
//! requests it serves: a decoding step costs about the same for eight requests as for
//! one, where it is bound by reading the weights. Every row's sums run in the same order
//! as alone, so each request's result is the one it gets alone.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::{Backbone, BatchItem, KvCache};

use super::decoder::{Decoder, Step};
use super::{rows, GenModel};

/// Positions of one pass at most: a round with more runs in several passes, which keeps
/// the activations held at once to a few tens of MiB.
const PASS_ROWS: usize = 1024;
/// A step longer than this (a long prompt) runs alone, chunked by [`Backbone::forward_last`].
const ALONE_ROWS: usize = 256;

/// Runs every decoder in `decoders` to its end. A decoder whose step fails ends there with
/// its error in `errors` (same index); the others go on.
pub(super) fn run_all(
    model: &GenModel,
    decoders: &mut [Decoder<'_>],
    errors: &mut [Option<Error>],
) {
    loop {
        let steps: Vec<(usize, Step)> = decoders
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| errors[*i].is_none())
            .filter_map(|(i, d)| d.step().map(|s| (i, s)))
            .collect();
        if steps.is_empty() {
            return;
        }
        for pass in passes(&steps) {
            let hidden = run_pass(&model.backbone, decoders, &pass);
            // One LM-head product for every row of the pass that needs logits.
            let wanted: Vec<usize> = (0..pass.len())
                .filter(|&p| pass[p].1.logits && hidden[p].is_ok())
                .collect();
            let mut logits = match model.batch_logits(wanted.iter().map(|&p| &hidden[p])) {
                Ok(all) => all.into_iter(),
                Err(err) => {
                    // Rare (the product itself failed): every request that needed it fails;
                    // the others of the pass still take their rows.
                    for &p in &wanted {
                        errors[pass[p].0] = Some(Error::Session(format!(
                            "logits of a batched step failed: {err}"
                        )));
                    }
                    Vec::new().into_iter()
                }
            };
            for (p, ((i, step), result)) in pass.iter().zip(hidden).enumerate() {
                if errors[*i].is_some() {
                    continue;
                }
                let outcome = result.and_then(|rows| {
                    let own = if wanted.contains(&p) {
                        logits.next().unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    debug_assert!(!step.logits || own.len() == rows.len());
                    decoders[*i].finish(&rows, &own)
                });
                if let Err(err) = outcome {
                    errors[*i] = Some(err);
                }
            }
        }
    }
}

/// Splits a round's steps into passes: long steps alone, the rest together up to
/// [`PASS_ROWS`] positions a pass.
fn passes(steps: &[(usize, Step)]) -> Vec<Vec<&(usize, Step)>> {
    let mut out: Vec<Vec<&(usize, Step)>> = Vec::new();
    let mut current: Vec<&(usize, Step)> = Vec::new();
    let mut rows = 0;
    for step in steps {
        let len = step.1.feed.len();
        if len > ALONE_ROWS {
            out.push(vec![step]);
            continue;
        }
        if rows + len > PASS_ROWS && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            rows = 0;
        }
        rows += len;
        current.push(step);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Runs one pass; per step, its final rows or its error. A failed shared pass is rerun
/// step by step, so that an error belongs to the request that caused it.
fn run_pass(
    backbone: &Backbone,
    decoders: &mut [Decoder<'_>],
    pass: &[&(usize, Step)],
) -> Vec<Result<Vec<Vec<f32>>>> {
    let hidden = backbone.config().hidden_size;
    let split = |flat: Vec<f32>| flat.chunks(hidden).map(<[f32]>::to_vec).collect();
    if let [(i, step)] = pass {
        let cache = &mut decoders[*i].cache;
        return vec![backbone
            .forward_last(&step.feed, cache, step.rows)
            .and_then(|t| rows(&t))];
    }
    let keep: Vec<usize> = pass.iter().map(|(_, s)| s.rows).collect();
    let mut caches = disjoint_caches(decoders, pass);
    let mut items: Vec<BatchItem<'_>> = pass
        .iter()
        .zip(caches.iter_mut())
        .map(|((_, s), cache)| BatchItem {
            ids: &s.feed,
            cache,
        })
        .collect();
    match backbone.forward_batch_last(&mut items, &keep) {
        Ok(all) => all.into_iter().map(|flat| Ok(split(flat))).collect(),
        Err(_) => pass
            .iter()
            .map(|(i, step)| {
                backbone
                    .forward_last(&step.feed, &mut decoders[*i].cache, step.rows)
                    .and_then(|t| rows(&t))
            })
            .collect(),
    }
}

/// Mutable borrows of the caches of the decoders a pass names (each index once, as the
/// round takes one step per decoder), in the pass's order.
fn disjoint_caches<'a>(
    decoders: &'a mut [Decoder<'_>],
    pass: &[&(usize, Step)],
) -> Vec<&'a mut KvCache> {
    let mut slots: Vec<Option<&'a mut KvCache>> =
        decoders.iter_mut().map(|d| Some(&mut d.cache)).collect();
    pass.iter()
        .filter_map(|(i, _)| slots.get_mut(*i).and_then(Option::take))
        .collect()
}

impl GenModel {
    /// Logits over the vocabulary of every row of `hidden` (each item a step's rows), one
    /// product for all of them; returned per step.
    fn batch_logits<'a>(
        &self,
        hidden: impl Iterator<Item = &'a Result<Vec<Vec<f32>>>>,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let parts: Vec<&Vec<Vec<f32>>> = hidden.filter_map(|h| h.as_ref().ok()).collect();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return Ok(parts.iter().map(|_| Vec::new()).collect());
        }
        let width = self.backbone.config().hidden_size;
        let flat: Vec<f32> = parts
            .iter()
            .flat_map(|p| p.iter().flatten().copied())
            .collect();
        let all = rows(&self.lm_head.forward(&Tensor::from_vec(
            flat,
            (total, width),
            self.backbone.device(),
        )?)?)?;
        let mut all = all.into_iter();
        Ok(parts
            .iter()
            .map(|p| all.by_ref().take(p.len()).collect())
            .collect())
    }

    /// Logits over the vocabulary of one final hidden row.
    pub(super) fn vocabulary_logits(&self, row: &[f32]) -> Result<Vec<f32>> {
        let width = self.backbone.config().hidden_size;
        let t = Tensor::from_vec(row.to_vec(), (1, width), self.backbone.device())?;
        Ok(rows(&self.lm_head.forward(&t)?)?.remove(0))
    }
}
