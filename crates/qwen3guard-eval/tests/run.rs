//! `run` end to end on the engine's fixture checkpoints (random weights: the numbers mean
//! nothing, the files must be well-formed and score): the Gen and Stream round trips, the
//! official split index, resuming (complete, interrupted, foreign output) and per-sample
//! failures.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use qwen3guard::prompt::Task;
use qwen3guard::{Checkpoint, GenOptions, LoadOptions, StreamGuard};
use qwen3guard_eval::dataset::{Dataset, Format};
use qwen3guard_eval::publish::{read_sample_scores, write_report};
use qwen3guard_eval::run::{run, Guard, RunError, RunOptions};
use qwen3guard_eval::{score_file, Kind};
use serde_json::Value;

fn engine_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../qwen3guard/tests/fixtures")
        .join(name)
}

fn dataset_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/datasets")
        .join(name)
}

fn guard(name: &str) -> Guard {
    let checkpoint = Checkpoint::open(&engine_fixture(name)).unwrap();
    Guard::load(&checkpoint, &LoadOptions::default()).unwrap()
}

fn stream_guard() -> StreamGuard {
    let checkpoint = Checkpoint::open(&engine_fixture("stream")).unwrap();
    StreamGuard::load(&checkpoint, &LoadOptions::default()).unwrap()
}

fn dataset(name: &str, task: Task) -> Dataset {
    Dataset::load(&dataset_file(name), None, task).unwrap()
}

/// A fresh scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("qwen3guard-run-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_owned(),
        thinking: false,
        // Random weights never write a stop token; a short budget keeps the tests quick.
        gen: GenOptions {
            max_new_tokens: 16,
            ..GenOptions::default()
        },
        limit: None,
        skip_errors: false,
        progress: false,
    }
}

/// Every line of a predictions file, parsed; each must be a complete JSON object.
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "the file ends with a complete line");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn id_set(lines: &[Value]) -> BTreeSet<String> {
    lines.iter().map(|l| l["id"].to_string()).collect()
}

#[test]
fn gen_round_trip() {
    let scratch = Scratch::new("gen");
    let out = scratch.path("gen.jsonl");
    let data = dataset("qwen3guardtest-response_loc.jsonl", Task::Response);
    let summary = run(&guard("gen-tied"), &data, &options(&out)).unwrap();
    assert_eq!(
        (summary.kind, summary.written, summary.resumed),
        (Kind::Gen, 3, 0)
    );

    let lines = lines(&out);
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["id"], i);
        assert_eq!(line["label"], "Unsafe");
        assert!(line["guard_predict"].is_string());
        assert!(line["categories"].is_array());
        let scores = &line["scores"];
        let sum: f64 = ["Safe", "Unsafe", "Controversial"]
            .iter()
            .map(|k| scores[k].as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-4, "{scores}");
        let score = line["unsafe_score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert_eq!(
            line["messages"].as_array().unwrap().last().unwrap()["role"],
            "assistant"
        );
    }

    let report = score_file(Kind::Gen, &out).unwrap();
    assert_eq!(report.strict.total(), 3);
    assert_eq!(report.strict.positives(), 3);
    let scores = read_sample_scores(&out).unwrap().unwrap();
    assert_eq!(scores.len(), 3);
    let files = write_report(&scratch.path("report"), "Gen", &report, Some(&scores)).unwrap();
    assert_eq!(files.len(), 3);
    let summary_md = std::fs::read_to_string(scratch.path("report/summary.md")).unwrap();
    assert!(summary_md.contains("## Threshold sweep"), "{summary_md}");
    assert!(std::fs::read_to_string(scratch.path("report/pr-curve.svg"))
        .unwrap()
        .starts_with("<svg"));
}

#[test]
fn gen_reads_the_reasoning_only_with_thinking() {
    let scratch = Scratch::new("gen-thinking");
    let data = dataset("qwen3guardtest-thinking.jsonl", Task::Response);
    let guard = guard("gen-tied");
    for thinking in [false, true] {
        let out = scratch.path(&format!("thinking-{thinking}.jsonl"));
        let options = RunOptions {
            thinking,
            limit: Some(1),
            ..options(&out)
        };
        let summary = run(&guard, &data, &options).unwrap();
        assert_eq!(
            (summary.samples, summary.written, summary.with_reasoning),
            (1, 1, 1)
        );
        let judged = lines(&out)[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(judged.contains("<think>"), thinking, "{judged}");
        assert!(judged.ends_with("water when the top of the soil is dry."));
    }
}

#[test]
fn stream_response_round_trip_with_latency() {
    let scratch = Scratch::new("stream-loc");
    let out = scratch.path("stream.jsonl");
    let data = dataset("qwen3guardtest-thinking_loc.jsonl", Task::Response);
    let options = RunOptions {
        thinking: true,
        ..options(&out)
    };
    let summary = run(&guard("stream"), &data, &options).unwrap();
    assert_eq!((summary.kind, summary.written), (Kind::StreamResponse, 2));

    let stream = stream_guard();
    let think_open = stream.prompter().tokenizer().marker_id("<think>").unwrap();
    for (line, sample) in lines(&out).iter().zip(&data.samples) {
        let ids = stream
            .render_exchange(&sample.conversation)
            .unwrap()
            .ids()
            .to_vec();
        let split = line["split_idx_eval"].as_u64().unwrap() as usize;
        // The official thinking split: the first token inside the think block.
        assert_eq!(ids[split - 2], think_open);
        let levels = line["pred_risk_levels"].as_array().unwrap();
        assert_eq!(
            levels.len(),
            ids.len() - split,
            "one level per position to the end"
        );
        assert!(levels.iter().all(|l| matches!(l.as_u64(), Some(0..=2))));
        assert_eq!(
            line["pred_categories"].as_array().unwrap().len(),
            levels.len()
        );
        assert_eq!(
            line["pred_risk_prob"].as_array().unwrap().len(),
            levels.len()
        );
        assert_eq!(line["unsafe_start_index"], sample.span.unwrap().start);
        assert!(["Safe", "Unsafe", "Controversial"].contains(&line["verdict"].as_str().unwrap()));
    }

    let report = score_file(Kind::StreamResponse, &out).unwrap();
    assert_eq!(report.latency.unwrap().bins.total(), 2);
    let scores = read_sample_scores(&out).unwrap();
    let files = write_report(
        &scratch.path("report"),
        "Stream",
        &report,
        scores.as_deref(),
    )
    .unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["modes.svg", "latency.svg", "pr-curve.svg", "summary.md"]
    );
}

#[test]
fn stream_split_without_thinking_follows_the_think_block() {
    let scratch = Scratch::new("stream-nothink");
    let data = dataset("qwen3guardtest-thinking.jsonl", Task::Response);
    let guard = guard("stream");
    let mut splits = Vec::new();
    for thinking in [false, true] {
        let out = scratch.path(&format!("thinking-{thinking}.jsonl"));
        let options = RunOptions {
            thinking,
            ..options(&out)
        };
        run(&guard, &data, &options).unwrap();
        splits.push(lines(&out)[0]["split_idx_eval"].as_u64().unwrap() as usize);
        // The reasoning stays in the rendered chat either way.
        assert!(lines(&out)[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("<think>"));
    }
    let stream = stream_guard();
    let ids = stream
        .render_exchange(&data.samples[0].conversation)
        .unwrap()
        .ids()
        .to_vec();
    let think_close = stream.prompter().tokenizer().marker_id("</think>").unwrap();
    let newlines = stream.prompter().tokenizer().encode_text("\n\n").unwrap();
    assert_eq!(ids[splits[0] - 2], think_close);
    assert_eq!(newlines, [ids[splits[0] - 1]]);
    assert!(splits[1] < splits[0]);

    // A response without reasoning: the split is after the empty think block.
    let data = dataset("qwen3guardtest-response_loc.jsonl", Task::Response);
    let out = scratch.path("plain.jsonl");
    run(&guard, &data, &options(&out)).unwrap();
    let ids = stream
        .render_exchange(&data.samples[0].conversation)
        .unwrap()
        .ids()
        .to_vec();
    let split = lines(&out)[0]["split_idx_eval"].as_u64().unwrap() as usize;
    assert_eq!(ids[split - 2], think_close);
}

#[test]
fn stream_prompt_round_trip() {
    let scratch = Scratch::new("stream-prompt");
    let out = scratch.path("prompts.jsonl");
    let data = dataset("toxicchat.jsonl", Task::Prompt);
    let summary = run(&guard("stream"), &data, &options(&out)).unwrap();
    assert_eq!((summary.kind, summary.written), (Kind::StreamPrompt, 3));
    let stream = stream_guard();
    for (line, sample) in lines(&out).iter().zip(&data.samples) {
        assert_eq!(line["id"].as_str().unwrap(), sample.key());
        assert_eq!(line["pred_risk_levels"].as_array().unwrap().len(), 1);
        let exchange = stream.render_exchange(&sample.conversation).unwrap();
        assert_eq!(line["prompt_index"], exchange.user_end());
        assert!(line.get("split_idx_eval").is_none());
    }
    let report = score_file(Kind::StreamPrompt, &out).unwrap();
    assert_eq!(report.strict.total(), 3);
    assert_eq!(report.strict.positives(), 1);
}

#[test]
fn second_run_skips_everything() {
    let scratch = Scratch::new("resume-all");
    let out = scratch.path("p.jsonl");
    let data = dataset("qwen3guardtest-response_loc.jsonl", Task::Response);
    let guard = guard("stream");
    run(&guard, &data, &options(&out)).unwrap();
    let before = std::fs::read(&out).unwrap();
    let summary = run(&guard, &data, &options(&out)).unwrap();
    assert_eq!(
        (summary.written, summary.resumed, summary.samples),
        (0, 3, 3)
    );
    assert!(!summary.dropped_partial_line);
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn interrupted_output_is_repaired_and_completed() {
    let scratch = Scratch::new("resume-cut");
    let out = scratch.path("p.jsonl");
    let data = dataset("qwen3guardtest-response_loc.jsonl", Task::Response);
    let guard = guard("stream");
    run(&guard, &data, &options(&out)).unwrap();
    let complete = std::fs::read_to_string(&out).unwrap();
    let reference = lines(&out);

    // Keep the first line and half of the second, as a kill during the write would.
    let first_end = complete.find('\n').unwrap() + 1;
    let second_len = complete[first_end..].find('\n').unwrap();
    std::fs::write(&out, &complete[..first_end + second_len / 2]).unwrap();

    let summary = run(&guard, &data, &options(&out)).unwrap();
    assert!(summary.dropped_partial_line);
    assert_eq!((summary.resumed, summary.written), (1, 2));
    let repaired = lines(&out);
    assert_eq!(repaired.len(), 3);
    assert_eq!(id_set(&repaired), id_set(&reference));
    // Same model, same inputs: the redone lines are the lines of the first run.
    assert_eq!(repaired, reference);
    assert_eq!(
        score_file(Kind::StreamResponse, &out)
            .unwrap()
            .strict
            .total(),
        3
    );

    // A whole missing line in the middle is simply redone.
    let without_middle: String = complete
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&out, without_middle).unwrap();
    let summary = run(&guard, &data, &options(&out)).unwrap();
    assert_eq!((summary.resumed, summary.written), (2, 1));
    assert_eq!(id_set(&lines(&out)), id_set(&reference));
}

#[test]
fn foreign_output_is_not_resumed() {
    let scratch = Scratch::new("resume-foreign");
    let out = scratch.path("p.jsonl");
    let data = dataset("qwen3guardtest-response_loc.jsonl", Task::Response);
    let stream = guard("stream");
    let err = |guard: &Guard| match run(guard, &data, &options(&out)) {
        Err(e @ RunError::Resume { .. }) => e.to_string(),
        other => panic!("expected a resume error, got {other:?}"),
    };

    std::fs::write(&out, "id,label\n").unwrap();
    let message = err(&stream);
    assert!(message.ends_with("p.jsonl, line 1: not a JSON line (expected value at line 1 column 1); was it written by `eval run`? Remove it or choose another --out"), "{message}");

    std::fs::write(&out, "{\"label\": \"Safe\"}\n").unwrap();
    assert!(err(&stream).contains("line 1: has no `id`"));

    std::fs::write(
        &out,
        "{\"id\": 0, \"label\": \"Safe\", \"guard_predict\": \"Safety: Safe\"}\n",
    )
    .unwrap();
    let message = err(&stream);
    assert!(
        message
            .contains("line 1: has no `split_idx_eval`: these are not stream-response predictions"),
        "{message}"
    );

    std::fs::write(&out, "{\"id\": 7, \"split_idx_eval\": 3}\n").unwrap();
    assert!(err(&stream).contains("line 1: id 7 is not in the dataset"));
}

#[test]
fn failing_samples_name_the_row_or_are_skipped() {
    let scratch = Scratch::new("failures");
    let path = scratch.path("long.jsonl");
    // The fixture's context is 1,024 positions; the second row is far longer.
    let long = "word ".repeat(3000);
    let rows = [
        serde_json::json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "label": "Safe"}),
        serde_json::json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": long}], "label": "Safe"}),
        serde_json::json!({"messages": [{"role": "user", "content": "bye"}, {"role": "assistant", "content": "goodbye"}], "label": "Safe"}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let data = Dataset::load(&path, Some(Format::Messages), Task::Response).unwrap();
    let guard = guard("stream");

    let out = scratch.path("stop.jsonl");
    let err = run(&guard, &data, &options(&out)).unwrap_err();
    assert_eq!(err.to_string(), "row 1 (line 2) (id 1)");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("1024"), "{cause}");
    assert_eq!(lines(&out).len(), 1, "what came before the failure is kept");

    let out = scratch.path("skip.jsonl");
    let options = RunOptions {
        skip_errors: true,
        ..options(&out)
    };
    let summary = run(&guard, &data, &options).unwrap();
    assert_eq!(summary.written, 2);
    assert_eq!(summary.failed.len(), 1);
    assert_eq!(summary.failed[0].1, "1");
    assert_eq!(
        id_set(&lines(&out)),
        BTreeSet::from(["0".into(), "2".into()])
    );
}
