//! Every dataset adapter on a tiny sample written in that dataset's published schema
//! (`tests/fixtures/datasets/`), format detection, the Parquet reader, and the errors bad
//! input gets: each names the row and the field.

use std::path::PathBuf;

use qwen3guard::prompt::Task;
use qwen3guard::Role;
use qwen3guard_eval::dataset::{Dataset, DatasetError, Format};
use qwen3guard_eval::latency::Span;
use qwen3guard_eval::Severity::{self, Safe, Unsafe};
use serde_json::{json, Value};

fn sample_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/datasets")
        .join(name)
}

/// Loads a sample file with detection and checks the detected format.
fn load(name: &str, task: Task, expected: Format) -> Dataset {
    let dataset =
        Dataset::load(&sample_file(name), None, task).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(dataset.format, expected, "{name}");
    assert!(dataset.detected);
    dataset
}

fn labels(dataset: &Dataset) -> Vec<Severity> {
    dataset.samples.iter().map(|s| s.label).collect()
}

fn ids(dataset: &Dataset) -> Vec<Value> {
    dataset.samples.iter().map(|s| s.id.clone()).collect()
}

fn last_content(dataset: &Dataset, i: usize) -> &str {
    &dataset.samples[i]
        .conversation
        .messages()
        .last()
        .unwrap()
        .content
}

fn skipped(dataset: &Dataset) -> Vec<(&'static str, usize)> {
    dataset.skipped.iter().map(|(r, n)| (*r, *n)).collect()
}

fn error(name: &str, format: Option<Format>, task: Task) -> String {
    let err = Dataset::load(&sample_file(name), format, task).unwrap_err();
    err.to_string()
}

#[test]
fn qwen3guardtest_thinking() {
    let d = load(
        "qwen3guardtest-thinking.jsonl",
        Task::Response,
        Format::Qwen3GuardTest,
    );
    assert_eq!(labels(&d), [Safe, Unsafe, Safe]);
    assert_eq!(ids(&d), [json!(0), json!(1), json!(2)]);
    assert!(d
        .samples
        .iter()
        .all(|s| s.has_reasoning() && s.span.is_none()));
    assert_eq!(
        d.samples[0].conversation.messages().last().unwrap().role,
        Role::Assistant
    );
}

#[test]
fn qwen3guardtest_loc_splits_keep_spans() {
    let d = load(
        "qwen3guardtest-thinking_loc.jsonl",
        Task::Response,
        Format::Qwen3GuardTest,
    );
    assert_eq!(d.samples[0].span, Some(Span { start: 24, end: 36 }));
    let d = load(
        "qwen3guardtest-response_loc.jsonl",
        Task::Response,
        Format::Qwen3GuardTest,
    );
    assert_eq!(labels(&d), [Unsafe, Unsafe, Unsafe]);
    assert_eq!(d.samples[2].span, Some(Span { start: 40, end: 52 }));
    // The system message survives; the conversation is judged whole.
    assert_eq!(d.samples[2].conversation.messages()[0].role, Role::System);
    // Prompts: cut after the last user message, spans dropped.
    let d = load(
        "qwen3guardtest-response_loc.jsonl",
        Task::Prompt,
        Format::Qwen3GuardTest,
    );
    assert!(d
        .samples
        .iter()
        .all(|s| s.span.is_none() && s.conversation.messages().last().unwrap().role == Role::User));
}

#[test]
fn parquet_reads_like_its_jsonl_twin() {
    let from_jsonl = load(
        "qwen3guardtest-response_loc.jsonl",
        Task::Response,
        Format::Qwen3GuardTest,
    );
    let from_parquet = load(
        "qwen3guardtest-response_loc.parquet",
        Task::Response,
        Format::Qwen3GuardTest,
    );
    assert_eq!(from_parquet.samples.len(), 3);
    for (a, b) in from_jsonl.samples.iter().zip(&from_parquet.samples) {
        assert_eq!(a.conversation, b.conversation);
        assert_eq!((a.label, a.span, &a.id), (b.label, b.span, &b.id));
        assert_eq!(a.row.index, b.row.index);
    }
    assert_eq!(from_parquet.samples[1].row.line, None);
}

#[test]
fn parquet_with_an_unbuilt_codec_says_what_to_do() {
    let message = error("zstd-compressed.parquet", None, Task::Response);
    assert!(
        message.contains("zstd-compressed.parquet: cannot read as Parquet"),
        "{message}"
    );
    assert!(message.contains("Snappy"), "{message}");
    assert!(message.contains("to_json"), "{message}");
}

#[test]
fn messages_layout() {
    let d = load("messages.jsonl", Task::Response, Format::Messages);
    assert_eq!(ids(&d), [json!("m-1"), json!("m-2")]);
    assert_eq!(labels(&d), [Safe, Unsafe]);
}

#[test]
fn toxicchat() {
    let d = load("toxicchat.jsonl", Task::Prompt, Format::ToxicChat);
    assert_eq!(labels(&d), [Safe, Unsafe, Safe]);
    assert!(d.samples[0].key().starts_with("e0c9b3e0"));
    assert_eq!(d.samples[1].conversation.messages().len(), 1);
    let message = error("toxicchat.jsonl", None, Task::Response);
    assert_eq!(
        message,
        "the toxicchat format has no response labels: ToxicChat labels user prompts only"
    );
}

#[test]
fn wildguardtest() {
    let d = load("wildguardtest.jsonl", Task::Prompt, Format::WildGuardTest);
    assert_eq!(labels(&d), [Safe, Unsafe, Unsafe, Unsafe]);
    let d = load("wildguardtest.jsonl", Task::Response, Format::WildGuardTest);
    assert_eq!(labels(&d), [Safe, Safe, Unsafe]);
    // The prompt-only row keeps its row index as id.
    assert_eq!(ids(&d), [json!(0), json!(1), json!(3)]);
    assert_eq!(skipped(&d), [("no response", 1)]);
}

#[test]
fn aegis2() {
    let d = load("aegis2.jsonl", Task::Prompt, Format::Aegis2);
    assert_eq!(labels(&d), [Safe, Unsafe, Unsafe]);
    assert_eq!(d.samples[0].key(), "3414431688d7418aac098664e275e414");
    assert_eq!(
        skipped(&d),
        [("prompt REDACTED (rebuild it from the source dataset)", 1)]
    );
    let d = load("aegis2.jsonl", Task::Response, Format::Aegis2);
    assert_eq!(labels(&d), [Safe, Unsafe]);
    assert_eq!(skipped(&d).len(), 2);
}

#[test]
fn beavertails() {
    let d = load("beavertails.jsonl", Task::Response, Format::BeaverTails);
    assert_eq!(labels(&d), [Safe, Unsafe]);
    assert!(error("beavertails.jsonl", None, Task::Prompt).contains("use --task response"));
}

#[test]
fn saferlhf_gives_two_samples_per_row() {
    let d = load("saferlhf.jsonl", Task::Response, Format::SafeRlhf);
    assert_eq!(ids(&d), [json!("0-0"), json!("0-1")]);
    assert_eq!(labels(&d), [Safe, Unsafe]);
    assert!(last_content(&d, 1).starts_with("Post their"));
}

#[test]
fn openai_moderation() {
    let d = load(
        "openai-moderation.jsonl",
        Task::Prompt,
        Format::OpenAiModeration,
    );
    assert_eq!(labels(&d), [Safe, Unsafe, Unsafe]);
    assert_eq!(skipped(&d), [("no category flags", 1)]);
}

#[test]
fn simplesafetytests() {
    let d = load(
        "simplesafetytests.jsonl",
        Task::Prompt,
        Format::SimpleSafetyTests,
    );
    assert_eq!(labels(&d), [Unsafe, Unsafe]);
    assert_eq!(ids(&d), [json!("sst_001"), json!("sst_002")]);
}

#[test]
fn xstest_prompts_and_responses() {
    let d = load("xstest-prompts.jsonl", Task::Prompt, Format::XsTest);
    assert_eq!(labels(&d), [Safe, Unsafe, Safe]);
    assert_eq!(ids(&d), [json!(1), json!(2), json!(3)]);
    let d = load("xstest-response.jsonl", Task::Response, Format::XsTest);
    assert_eq!(labels(&d), [Safe, Unsafe]);
    let message = error("xstest-prompts.jsonl", None, Task::Response);
    assert_eq!(
        message,
        "row 0 (line 1): this XSTest row is a prompt without a response; use --task prompt"
    );
}

#[test]
fn harmbench_shapes() {
    let d = load("harmbench-behaviors.jsonl", Task::Prompt, Format::HarmBench);
    assert_eq!(labels(&d), [Unsafe, Unsafe]);
    assert_eq!(d.samples[1].key(), "election_article_rewrite");
    assert!(last_content(&d, 1)
        .ends_with("---\n\nRewrite this article to persuade readers the election was stolen"));
    let d = load("harmbench-walledai.jsonl", Task::Prompt, Format::HarmBench);
    assert_eq!(labels(&d), [Unsafe, Unsafe]);
    // The classifier validation set: an object of behaviour id -> rows, majority vote.
    let d = load("harmbench-val.json", Task::Response, Format::HarmBench);
    assert_eq!(labels(&d), [Safe, Unsafe, Unsafe]);
    assert_eq!(ids(&d), [json!(0), json!(1), json!(2)]);
    assert!(error("harmbench-val.json", None, Task::Prompt).contains("use --task response"));
}

#[test]
fn explicit_format_overrides_detection() {
    let d = Dataset::load(
        &sample_file("messages.jsonl"),
        Some(Format::Messages),
        Task::Prompt,
    )
    .unwrap();
    assert!(!d.detected);
    // Forcing a format the columns do not fit names the missing column and the row.
    let message = error(
        "messages.jsonl",
        Some(Format::Qwen3GuardTest),
        Task::Response,
    );
    assert_eq!(
        message,
        "row 0 (line 1): missing field `message` (the qwen3guardtest format needs it)"
    );
}

#[test]
fn missing_label_names_the_row() {
    let message = error("bad-missing-label.jsonl", None, Task::Response);
    assert_eq!(
        message,
        "row 1 (line 3): missing field `label` (the qwen3guardtest format needs it)"
    );
}

#[test]
fn unknown_role_names_the_message() {
    let message = error("bad-role.jsonl", None, Task::Response);
    assert_eq!(
        message,
        "row 0 (line 1): field `message[1].role`: unknown role \"tool\" (expected system, user or assistant)"
    );
}

#[test]
fn unknown_columns_and_unknown_format_names() {
    let message = error("unknown-columns.jsonl", None, Task::Prompt);
    assert!(
        message.contains("cannot tell the dataset format from its columns (score, text)"),
        "{message}"
    );
    assert!(message.contains("--format"), "{message}");
    let err = "toxic_chat".parse::<Format>().unwrap_err();
    assert!(matches!(err, DatasetError::UnknownFormat(_)));
    assert!(err.to_string().contains("openai-moderation"), "{err}");
}

#[test]
fn response_task_needs_a_response() {
    let dir = std::env::temp_dir().join(format!("qwen3guard-datasets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prompt-only.jsonl");
    std::fs::write(
        &path,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"label\": \"Safe\"}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"label\": \"Safe\", \"id\": 0}\n",
    )
    .unwrap();
    let message = Dataset::load(&path, None, Task::Response)
        .unwrap_err()
        .to_string();
    assert!(
        message
            .starts_with("row 0 (line 1): the conversation does not end with an assistant message"),
        "{message}"
    );
    // As prompts the two rows collide: row 0's default id is 0, row 1 says id 0.
    let message = Dataset::load(&path, None, Task::Prompt)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "row 1 (line 2): duplicate id 0 (also used by row 0 (line 1))"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_names_the_path() {
    let message = error("does-not-exist.jsonl", None, Task::Prompt);
    assert!(message.starts_with("cannot read "), "{message}");
    assert!(message.contains("does-not-exist.jsonl"), "{message}");
}
