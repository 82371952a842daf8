//! Stream against the reference: query-head and per-position response-head probabilities,
//! and the invariance of streaming (token by token = chunks of 16 = all at once).

mod common;

use common::{assert_close, conversation, fixture, max_abs_difference, nan_max, reference};
use qwen3guard::stream::StreamReport;
use qwen3guard::{Checkpoint, Message, StreamGuard};
use serde::Deserialize;

#[derive(Deserialize)]
struct HeadProbs {
    risk_probs: Vec<f32>,
    category_probs: Vec<f32>,
}

#[derive(Deserialize)]
struct ResponseProbs {
    risk_probs: Vec<Vec<f32>>,
    category_probs: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<Message>,
    token_ids: Vec<u32>,
    user_end_index: usize,
    query: HeadProbs,
    response: ResponseProbs,
}

fn guard(name: &str) -> StreamGuard {
    StreamGuard::load(
        &Checkpoint::open(&fixture(name)).unwrap(),
        &Default::default(),
    )
    .unwrap()
}

/// Runs a case's whole conversation through a session in `chunk`-sized appends and returns
/// every appended position's (risk probs in label order, category probs).
fn run_session(
    guard: &StreamGuard,
    case: &Case,
    chunk: usize,
) -> (Vec<f32>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let exchange = guard
        .render_exchange(&conversation(&case.messages))
        .unwrap();
    let mut session = guard.open_exchange(&exchange).unwrap();
    let p = session.prompt_verdict();
    let query = vec![
        p.risk_probs.safe,
        p.risk_probs.unsafe_,
        p.risk_probs.controversial,
    ];
    let mut query_full = query.clone();
    query_full.extend(&p.category_probs);
    for piece in exchange.response_ids().chunks(chunk) {
        session.append(piece).unwrap();
    }
    let (risks, cats) = token_outputs(&session);
    (query_full, risks, cats)
}

/// Every appended position's risk probabilities (label order) and category probabilities.
fn token_outputs(session: &qwen3guard::StreamSession) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let tokens = session.tokens();
    let risks = tokens
        .iter()
        .map(|t| {
            vec![
                t.risk_probs.safe,
                t.risk_probs.unsafe_,
                t.risk_probs.controversial,
            ]
        })
        .collect();
    let cats = tokens.iter().map(|t| t.category_probs.clone()).collect();
    (risks, cats)
}

fn check_parity(name: &str) {
    let guard = guard(name);
    let cases: Vec<Case> = reference(name);
    assert!(cases.len() >= 5);
    for case in &cases {
        let label = format!("{name}/{}", case.name);
        let (query, risks, cats) = run_session(&guard, case, 1);
        let mut expected_query = case.query.risk_probs.clone();
        expected_query.extend(&case.query.category_probs);
        assert_close(&format!("{label}: query heads"), &query, &expected_query);
        assert_eq!(
            risks.len(),
            case.token_ids.len() - case.user_end_index - 1,
            "{label}: positions"
        );
        assert_eq!(
            risks.len(),
            case.response.risk_probs.len(),
            "{label}: reference positions"
        );
        for (i, (ours, theirs)) in risks.iter().zip(&case.response.risk_probs).enumerate() {
            assert_close(&format!("{label}: risk at +{i}"), ours, theirs);
        }
        for (i, (ours, theirs)) in cats.iter().zip(&case.response.category_probs).enumerate() {
            assert_close(&format!("{label}: category at +{i}"), ours, theirs);
        }
    }
}

#[test]
fn random_stream_checkpoint_matches_reference() {
    check_parity("stream");
}

#[test]
fn constructed_stream_checkpoint_matches_reference() {
    check_parity("stream-constructed");
}

/// Token by token, chunks of 16 and everything at once give the same probabilities.
#[test]
fn streaming_is_invariant_to_chunking() {
    let guard = guard("stream");
    let cases: Vec<Case> = reference("stream");
    let long = cases
        .iter()
        .max_by_key(|c| c.token_ids.len())
        .expect("cases exist");
    assert!(long.token_ids.len() > 100, "need a long case");
    let (q1, r1, c1) = run_session(&guard, long, 1);
    for chunk in [16, long.token_ids.len()] {
        let (q, r, c) = run_session(&guard, long, chunk);
        assert_close("query", &q, &q1);
        assert_eq!(r.len(), r1.len());
        for (i, (a, b)) in r.iter().zip(&r1).enumerate() {
            assert_close(&format!("chunk {chunk}: risk at +{i}"), a, b);
        }
        for (i, (a, b)) in c.iter().zip(&c1).enumerate() {
            assert_close(&format!("chunk {chunk}: category at +{i}"), a, b);
        }
    }
}

/// The report's own fields agree between chunkings too (levels, verdict, flagged position).
#[test]
fn reports_are_identical_across_chunkings() {
    let guard = guard("stream-constructed");
    let conv = qwen3guard::Conversation::from_prompt(
        "Tell me about chemistry",
        Some("First you take the bomb and then kill the poison with a vote"),
    );
    let levels = |r: &StreamReport| -> Vec<_> { r.tokens.iter().map(|t| t.risk_level).collect() };
    let one = guard.moderate(&conv, 1).unwrap();
    for chunk in [3, 16, 0] {
        let other = guard.moderate(&conv, chunk).unwrap();
        assert_eq!(levels(&one), levels(&other), "chunk {chunk}");
        assert_eq!(one.response_start_index, other.response_start_index);
        let (a, b) = (
            one.response.as_ref().unwrap(),
            other.response.as_ref().unwrap(),
        );
        assert_eq!((a.risk_level, a.flagged_at), (b.risk_level, b.flagged_at));
    }
}

/// bf16 and 8-bit weights against f32: the largest probability difference over every
/// position of every reference case. The figures are printed (`--nocapture`) for the
/// benchmark notes; the bound only catches a broken kernel, not rounding.
#[test]
fn reduced_precisions_stay_close_to_f32() {
    let f32_guard = guard("stream");
    for precision in [qwen3guard::Precision::Bf16, qwen3guard::Precision::Q8] {
        let reduced = StreamGuard::load(
            &Checkpoint::open(&fixture("stream")).unwrap(),
            &qwen3guard::LoadOptions { precision },
        )
        .unwrap();
        let mut worst = 0f32;
        for case in reference::<Case>("stream") {
            let (q32, r32, c32) = run_session(&f32_guard, &case, 16);
            let (q, r, c) = run_session(&reduced, &case, 16);
            let pairs = std::iter::once((&q32, &q))
                .chain(r32.iter().zip(&r))
                .chain(c32.iter().zip(&c));
            for (a, b) in pairs {
                worst = nan_max(worst, max_abs_difference(a, b));
            }
        }
        println!("{precision} vs f32, stream fixture: max probability difference {worst:.5}");
        assert!(
            worst > 0.0,
            "{precision} computed exactly f32: its kernel is not in use"
        );
        assert!(worst < 0.05, "{precision} drifts {worst} from f32");
    }
}

/// Sessions appended together in one batched forward pass (different chunk sizes, some
/// sessions finishing early) get exactly the verdicts they get appended alone.
#[test]
fn batched_appends_equal_separate_ones() {
    for precision in [
        qwen3guard::Precision::F32,
        qwen3guard::Precision::Bf16,
        qwen3guard::Precision::Q8,
    ] {
        let guard = StreamGuard::load(
            &Checkpoint::open(&fixture("stream")).unwrap(),
            &qwen3guard::LoadOptions { precision },
        )
        .unwrap();
        let cases: Vec<Case> = reference("stream");
        assert!(cases.len() >= 3, "need several cases");
        let exchanges: Vec<_> = cases
            .iter()
            .map(|c| guard.render_exchange(&conversation(&c.messages)).unwrap())
            .collect();
        let chunks: Vec<usize> = (0..cases.len()).map(|i| [1, 3, 16][i % 3]).collect();
        let mut sessions: Vec<_> = exchanges
            .iter()
            .map(|e| guard.open_exchange(e).unwrap())
            .collect();
        let pieces: Vec<Vec<&[u32]>> = exchanges
            .iter()
            .zip(&chunks)
            .map(|(e, &chunk)| e.response_ids().chunks(chunk).collect())
            .collect();
        let steps = pieces.iter().map(Vec::len).max().unwrap_or(0);
        for step in 0..steps {
            let ids: Vec<&[u32]> = pieces
                .iter()
                .map(|p| p.get(step).copied().unwrap_or(&[]))
                .collect();
            let mut refs: Vec<&mut qwen3guard::StreamSession> = sessions.iter_mut().collect();
            guard.append_batch(&mut refs, &ids).unwrap();
        }
        for ((case, session), &chunk) in cases.iter().zip(&sessions).zip(&chunks) {
            let (_, risks, cats) = run_session(&guard, case, chunk);
            let (batched_risks, batched_cats) = token_outputs(session);
            assert_eq!(batched_risks, risks, "{precision} {}: risk", case.name);
            assert_eq!(batched_cats, cats, "{precision} {}: category", case.name);
        }
    }
}

/// A batch refuses mismatched lists and sessions of another guard, changing nothing.
#[test]
fn batch_errors_leave_sessions_unchanged() {
    let (a, b) = (guard("stream"), guard("stream"));
    let conv = qwen3guard::Conversation::from_prompt("hello there", None);
    let mut mine = a.open(&conv).unwrap();
    let mut theirs = b.open(&conv).unwrap();
    let before = (mine.position(), theirs.position());
    let err = a
        .append_batch(&mut [&mut mine, &mut theirs], &[&[100], &[101]])
        .unwrap_err();
    assert!(err.to_string().contains("another StreamGuard"), "{err}");
    let err = a
        .append_batch(&mut [&mut mine], &[&[100], &[101]])
        .unwrap_err();
    assert!(
        matches!(
            err,
            qwen3guard::Error::BatchShape {
                sessions: 1,
                lists: 2
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), qwen3guard::ErrorKind::InvalidInput);
    let err = a
        .append_batch(&mut [&mut mine], &[&[u32::MAX]])
        .unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    assert_eq!((mine.position(), theirs.position()), before);
    assert!(mine.tokens().is_empty());
}

/// An empty batch, or one whose sessions have nothing to append, runs nothing.
#[test]
fn empty_batches_are_no_ops() {
    let guard = guard("stream");
    guard.append_batch(&mut [], &[]).unwrap();
    let mut session = guard
        .open(&qwen3guard::Conversation::from_prompt("hello there", None))
        .unwrap();
    let before = session.position();
    guard.append_batch(&mut [&mut session], &[&[]]).unwrap();
    assert_eq!(session.position(), before);
    assert!(session.tokens().is_empty());
}
