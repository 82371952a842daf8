//! Running several moderations' steps in shared forward passes.
//!
//! Each round ([`run_round`]) takes the next step of every unfinished [`Decoder`], runs their tokens
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

/// Runs one round: the next step of every decoder in `decoders` that has one and has not
/// failed. A decoder whose step fails ends there with its error in `errors` (same
/// index); the others go on. Returns whether any step ran.
pub(super) fn run_round(
    model: &GenModel,
    decoders: &mut [Decoder<'_>],
    errors: &mut [Option<Error>],
) -> bool {
    let steps: Vec<(usize, Step)> = decoders
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| errors[*i].is_none())
        .filter_map(|(i, d)| d.step().map(|s| (i, s)))
        .collect();
    if steps.is_empty() {
        return false;
    }
    for pass in passes(&steps) {
        let hidden = run_pass(&model.backbone, decoders, &pass);
        // One LM-head product for every row of the pass that needs logits.
        let wanted: Vec<usize> = (0..pass.len())
            .filter(|&p| pass[p].1.logits && hidden[p].is_ok())
            .collect();
        let wanted_rows = wanted
            .iter()
            .filter_map(|&p| hidden[p].as_ref().ok())
            .flatten()
            .map(Vec::as_slice);
        let mut logits = match model.vocabulary_logits(wanted_rows) {
            Ok(all) => all.into_iter(),
            Err(err) => {
                // Rare (the product itself failed): every request that needed it fails;
                // the others of the pass still take their rows.
                for &p in &wanted {
                    errors[pass[p].0] = Some(Error::Internal(format!(
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
                // The logits come in the pass's order, a step's rows together.
                let own: Vec<Vec<f32>> = if wanted.contains(&p) {
                    logits.by_ref().take(rows.len()).collect()
                } else {
                    Vec::new()
                };
                debug_assert!(!step.logits || own.len() == step.rows);
                decoders[*i].finish(&rows, &own)
            });
            if let Err(err) = outcome {
                errors[*i] = Some(err);
            }
        }
    }
    true
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
    let alone = |decoder: &mut Decoder<'_>, step: &Step| {
        backbone
            .forward_last(&step.feed, &mut decoder.cache, step.rows)
            .and_then(|t| rows(&t))
    };
    if let [(i, step)] = pass {
        return vec![alone(&mut decoders[*i], step)];
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
            .map(|(i, step)| alone(&mut decoders[*i], step))
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
    /// Logits over the vocabulary of final hidden `rows`, one product for all of them.
    pub(super) fn vocabulary_logits<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a [f32]>,
    ) -> Result<Vec<Vec<f32>>> {
        let flat: Vec<f32> = rows.into_iter().flatten().copied().collect();
        if flat.is_empty() {
            return Ok(Vec::new());
        }
        let width = self.backbone.config().hidden_size;
        let count = flat.len() / width;
        let hidden = Tensor::from_vec(flat, (count, width), self.backbone.device())?;
        super::rows(&self.lm_head.forward(&hidden)?)
    }
}
