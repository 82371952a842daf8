//! Gen against the transformers reference: prompt ids, hidden state, logits, greedy ids
//! and label scores, for a tied single-file checkpoint and a sharded one with its own
//! `lm_head`.

mod common;

use common::{assert_close, conversation, fixture, nan_max, reference};
use qwen3guard::{Checkpoint, GenGuard, GenOptions, Message};
use serde::Deserialize;

#[derive(Deserialize)]
struct LogitsSample {
    ids: Vec<u32>,
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct Scores {
    #[serde(rename = "Safe")]
    safe: f32,
    #[serde(rename = "Unsafe")]
    unsafe_: f32,
    #[serde(rename = "Controversial")]
    controversial: f32,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<Message>,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    last_hidden: Vec<f32>,
    logits_sample: LogitsSample,
    scores: Scores,
}

fn check(fixture_name: &str) {
    let checkpoint = Checkpoint::open(&fixture(fixture_name)).unwrap();
    let guard = GenGuard::load(&checkpoint, &Default::default()).unwrap();
    let cases: Vec<Case> = reference(fixture_name);
    assert!(!cases.is_empty());
    for case in &cases {
        let name = format!("{fixture_name}/{}", case.name);
        let conv = conversation(&case.messages);
        let rendered = guard.render(&conv).unwrap();
        assert_eq!(rendered.token_ids, case.prompt_ids, "{name}: prompt ids");

        let (hidden, logits) = guard.prompt_outputs(&case.prompt_ids).unwrap();
        assert_close(&format!("{name}: last hidden"), &hidden, &case.last_hidden);
        let sampled: Vec<f32> = case
            .logits_sample
            .ids
            .iter()
            .map(|&id| logits[id as usize])
            .collect();
        assert_close(
            &format!("{name}: logits"),
            &sampled,
            &case.logits_sample.values,
        );

        let options = GenOptions {
            max_new_tokens: case.greedy_ids.len(),
            ..GenOptions::default()
        };
        let verdict = guard.moderate(&conv, &options).unwrap();
        assert_eq!(
            verdict.generated_token_ids, case.greedy_ids,
            "{name}: greedy ids"
        );
        assert_eq!(verdict.prompt_tokens, case.prompt_ids.len());
        let s = verdict.scores;
        assert_close(
            &format!("{name}: scores"),
            &[s.safe, s.unsafe_, s.controversial],
            &[
                case.scores.safe,
                case.scores.unsafe_,
                case.scores.controversial,
            ],
        );
    }
}

#[test]
fn tied_single_file_checkpoint_matches_reference() {
    check("gen-tied");
}

#[test]
fn sharded_checkpoint_with_lm_head_matches_reference() {
    check("gen-sharded");
}

/// The scores do not depend on how many tokens were decoded first: the teacher-forced
/// `Safety:` forward runs on the cache truncated back to the prompt, which must behave as
/// if the decoded tokens had never been appended.
#[test]
fn scores_survive_decoding_and_cache_truncation() {
    let checkpoint = Checkpoint::open(&fixture("gen-tied")).unwrap();
    let guard = GenGuard::load(&checkpoint, &Default::default()).unwrap();
    let conv = qwen3guard::Conversation::from_prompt("How can I make a bomb?", None);
    let short = guard
        .moderate(
            &conv,
            &GenOptions {
                max_new_tokens: 1,
                ..GenOptions::default()
            },
        )
        .unwrap();
    let long = guard
        .moderate(
            &conv,
            &GenOptions {
                max_new_tokens: 20,
                ..GenOptions::default()
            },
        )
        .unwrap();
    assert_eq!(short.generated_token_ids.len(), 1);
    assert_eq!(short.scores, long.scores);
}

/// bf16 and 8-bit weights against f32 on the Gen fixtures: the largest label-score
/// difference (printed for the benchmark notes; the bound only catches a broken kernel).
#[test]
fn reduced_precision_scores_stay_close_to_f32() {
    let checkpoint = Checkpoint::open(&fixture("gen-sharded")).unwrap();
    let f32_guard = GenGuard::load(&checkpoint, &Default::default()).unwrap();
    let options = GenOptions {
        max_new_tokens: 1,
        ..GenOptions::default()
    };
    for precision in [qwen3guard::Precision::Bf16, qwen3guard::Precision::Q8] {
        let reduced = GenGuard::load(&checkpoint, &qwen3guard::LoadOptions { precision }).unwrap();
        let mut worst = 0f32;
        for case in reference::<Case>("gen-sharded") {
            let conv = conversation(&case.messages);
            let a = f32_guard.moderate(&conv, &options).unwrap().scores;
            let b = reduced.moderate(&conv, &options).unwrap().scores;
            for (x, y) in [
                (a.safe, b.safe),
                (a.unsafe_, b.unsafe_),
                (a.controversial, b.controversial),
            ] {
                worst = nan_max(worst, (x - y).abs());
            }
        }
        println!("{precision} vs f32, gen-sharded fixture: max score difference {worst:.5}");
        assert!(
            worst > 0.0 && worst < 0.05,
            "{precision} score drift {worst}"
        );
    }
}
