//! Verdicts known by construction. In the `stream-constructed` checkpoint every attention
//! and MLP output projection is zero, so each position sees only its own token: the tokens
//! listed in `construction.json` (" bomb", " kill", " poison") are Unsafe/Violent, " vote"
//! and " election" are Controversial/Politically Sensitive Topics, everything else is Safe.
//! That pins down the debouncer, the flagged position and the category exactly.

mod common;

use common::fixture;
use qwen3guard::stream::StreamReport;
use qwen3guard::{Checkpoint, Conversation, Mode, Severity, StreamGuard};
use serde::Deserialize;

#[derive(Deserialize)]
struct Construction {
    unsafe_token_ids: Vec<u32>,
    controversial_token_ids: Vec<u32>,
}

fn guard() -> StreamGuard {
    StreamGuard::load(
        &Checkpoint::open(&fixture("stream-constructed")).unwrap(),
        &Default::default(),
    )
    .unwrap()
}

fn report(response: &str) -> StreamReport {
    guard()
        .moderate(
            &Conversation::from_prompt("Tell me a story", Some(response)),
            1,
        )
        .unwrap()
}

/// Position of the `n`-th (0-based) response token whose text is `text`.
fn nth(report: &StreamReport, text: &str, n: usize) -> usize {
    report
        .tokens
        .iter()
        .filter(|t| t.text == text)
        .nth(n)
        .unwrap_or_else(|| panic!("no token {text:?} #{n}"))
        .index
}

#[test]
fn every_token_gets_its_constructed_level() {
    let construction: Construction = serde_json::from_str(
        &std::fs::read_to_string(fixture("stream-constructed").join("construction.json")).unwrap(),
    )
    .unwrap();
    let r = report("They bomb and kill, then vote in the election and poison nobody.");
    for t in &r.tokens {
        let expected = if construction.unsafe_token_ids.contains(&t.token_id) {
            Severity::Unsafe
        } else if construction.controversial_token_ids.contains(&t.token_id) {
            Severity::Controversial
        } else {
            Severity::Safe
        };
        assert_eq!(t.risk_level, expected, "token {:?} at {}", t.text, t.index);
        match expected {
            Severity::Unsafe => assert_eq!(t.category, "Violent"),
            Severity::Controversial => assert_eq!(t.category, "Politically Sensitive Topics"),
            Severity::Safe => {}
        }
    }
    assert_eq!(r.prompt.risk_level, Severity::Safe);
}

#[test]
fn a_single_unsafe_token_is_debounced_away() {
    let r = report("Never build a bomb at home.");
    assert!(r.tokens.iter().any(|t| t.risk_level == Severity::Unsafe));
    let v = r.response.unwrap();
    assert_eq!(v.risk_level, Severity::Safe);
    assert_eq!(v.flagged_at, None);
    assert_eq!(v.category, None);
}

#[test]
fn two_consecutive_unsafe_tokens_flag_at_the_second() {
    let r = report("First bomb kill everyone, then vote election.");
    let v = r.response.as_ref().unwrap();
    assert_eq!(v.risk_level, Severity::Unsafe);
    assert_eq!(v.flagged_at, Some(nth(&r, " kill", 0)));
    assert_eq!(v.category.as_deref(), Some("Violent"));
}

#[test]
fn unsafe_pair_outranks_an_earlier_controversial_pair() {
    let r = report("We vote election day, and later bomb bomb.");
    let v = r.response.as_ref().unwrap();
    assert_eq!(v.risk_level, Severity::Unsafe);
    assert_eq!(v.flagged_at, Some(nth(&r, " bomb", 1)));
}

#[test]
fn controversial_pair_alone_is_controversial() {
    let r = report("Please vote election officials out.");
    let v = r.response.as_ref().unwrap();
    assert_eq!(v.risk_level, Severity::Controversial);
    assert_eq!(v.flagged_at, Some(nth(&r, " election", 0)));
    assert_eq!(v.category.as_deref(), Some("Politically Sensitive Topics"));
}

/// Live stopping: a mixed Unsafe/Controversial pair stops a strict deployment at once but
/// is not an official pair and never stops a loose one.
#[test]
fn live_stop_follows_the_mode() {
    let guard = guard();
    let conv = Conversation::from_prompt("Tell me a story", None);
    let mut session = guard.open(&conv).unwrap();
    let header = guard.assistant_header(false).unwrap();
    session.start_response(&header).unwrap();
    let tok = guard.prompter().tokenizer();
    let ids = tok.encode_text("Go bomb vote now").unwrap();
    for id in ids {
        session.append(&[id]).unwrap();
    }
    let strict = session.stop(Mode::Strict).expect("strict mode stops");
    assert_eq!(
        strict.flagged_at,
        Some(
            session
                .tokens()
                .iter()
                .find(|t| t.text == " vote")
                .unwrap()
                .index
        )
    );
    assert!(session.stop(Mode::Loose).is_none());
    assert_eq!(session.verdict().risk_level, Severity::Safe);
    // The header tokens were classified but are not part of the response.
    assert_eq!(
        session.report().response_start_index,
        Some(session.tokens()[header.len()].index)
    );
}

/// The header the session prepends is exactly what the template renders before a response.
#[test]
fn assistant_header_matches_the_template() {
    let guard = guard();
    let conv = Conversation::from_prompt("Tell me a story", Some("Once"));
    let exchange = guard.render_exchange(&conv).unwrap();
    let header = guard.assistant_header(false).unwrap();
    let start = exchange.response_start().unwrap();
    assert_eq!(
        &exchange.ids()[exchange.user_end() + 1..start],
        header.as_slice()
    );
    let thinking = guard.assistant_header(true).unwrap();
    let conv = Conversation::from_prompt("Tell me a story", Some("<think>plan</think>Once"));
    let exchange = guard.render_exchange(&conv).unwrap();
    let start = exchange.response_start().unwrap();
    assert_eq!(
        &exchange.ids()[exchange.user_end() + 1..start],
        thinking.as_slice()
    );
}
