//! `qwen3guard eval run` and `eval score --report` through the built binary: the command
//! form of the contract, resuming from the command line, and one-line errors for bad input.

use std::path::PathBuf;

use serde_json::Value;

mod common;
use common::{qwen3guard, Scratch};

fn model(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../qwen3guard/tests/fixtures")
        .join(name);
    path.to_str().unwrap().to_owned()
}

fn dataset(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../qwen3guard-eval/tests/fixtures/datasets")
        .join(name);
    path.to_str().unwrap().to_owned()
}

#[test]
fn stream_run_scores_reports_and_resumes() {
    let scratch = Scratch::new("cli-eval-stream");
    let (out, report) = (scratch.file("pred/loc.jsonl"), scratch.file("report"));
    let stream = model("stream");
    let data = dataset("qwen3guardtest-response_loc.jsonl");
    let args = [
        "eval",
        "run",
        "--model",
        &stream,
        "--dataset",
        &data,
        "--task",
        "response",
        "--out",
        &out,
        "--report",
        &report,
        "--json",
    ];
    let run = qwen3guard(&args);
    assert!(run.success, "{}", run.stderr);
    let scores: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(scores["strict"]["f1"].is_number() && scores["loose"]["recall"].is_number());
    assert_eq!(scores["latency"]["bins"].as_object().unwrap().len(), 8);
    assert!(
        run.stderr
            .contains("format qwen3guardtest (detected from its columns)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("3 predictions written, 0 already there"),
        "{}",
        run.stderr
    );
    for file in ["summary.md", "modes.svg", "latency.svg", "pr-curve.svg"] {
        assert!(std::path::Path::new(&report).join(file).is_file(), "{file}");
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);

    let again = qwen3guard(&args);
    assert!(again.success, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("0 predictions written, 3 already there"),
        "{}",
        again.stderr
    );
    assert_eq!(again.stdout, run.stdout, "the same file scores the same");

    // The written file re-scores with `eval score`, report included.
    let report2 = scratch.file("report2");
    let score = qwen3guard(&[
        "eval",
        "score",
        "--kind",
        "stream-response",
        "--input",
        &out,
        "--report",
        &report2,
    ]);
    assert!(score.success, "{}", score.stderr);
    assert!(
        score.stdout.contains("Detection latency"),
        "{}",
        score.stdout
    );
    let md = std::fs::read_to_string(std::path::Path::new(&report2).join("summary.md")).unwrap();
    assert!(md.contains("## Threshold sweep"), "{md}");
}

#[test]
fn gen_run_on_prompts() {
    let scratch = Scratch::new("cli-eval-gen");
    let out = scratch.file("xstest.jsonl");
    let gen = model("gen-tied");
    let data = dataset("xstest-prompts.jsonl");
    let run = qwen3guard(&[
        "eval",
        "run",
        "--model",
        &gen,
        "--dataset",
        &data,
        "--task",
        "prompt",
        "--out",
        &out,
        "--max-new-tokens",
        "8",
        "--limit",
        "2",
    ]);
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("Gen: 2 samples, 1 labelled Unsafe"),
        "{}",
        run.stdout
    );
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["id"], 1);
    assert!(first["guard_predict"].is_string() && first["scores"]["Unsafe"].is_number());
}

#[test]
fn bad_input_fails_with_one_line() {
    let scratch = Scratch::new("cli-eval-bad");
    let out = scratch.file("never.jsonl");
    let stream = model("stream");
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["--dataset", "BAD_LABEL", "--task", "response"],
            "reading dataset",
        ),
        (
            vec!["--dataset", "TOXICCHAT", "--task", "response"],
            "the toxicchat format has no response labels",
        ),
        (
            vec![
                "--dataset",
                "TOXICCHAT",
                "--task",
                "prompt",
                "--format",
                "toxic",
            ],
            "unknown dataset format \"toxic\"",
        ),
        (
            vec!["--dataset", "TOXICCHAT", "--task", "sideways"],
            "invalid value 'sideways'",
        ),
    ];
    let (bad_label, toxicchat) = (
        dataset("bad-missing-label.jsonl"),
        dataset("toxicchat.jsonl"),
    );
    for (extra, expected) in cases {
        let mut args = vec![
            "eval",
            "run",
            "--model",
            stream.as_str(),
            "--out",
            out.as_str(),
        ];
        for arg in extra {
            args.push(match arg {
                "BAD_LABEL" => bad_label.as_str(),
                "TOXICCHAT" => toxicchat.as_str(),
                other => other,
            });
        }
        let result = qwen3guard(&args);
        assert!(!result.success, "{args:?} succeeded");
        assert!(result.stdout.is_empty(), "{}", result.stdout);
        assert!(
            result.stderr.contains(expected),
            "{args:?}: {}",
            result.stderr
        );
        assert!(!result.stderr.contains("panicked"), "{}", result.stderr);
    }
    let missing = qwen3guard(&[
        "eval",
        "run",
        "--model",
        &stream,
        "--out",
        &out,
        "--dataset",
        &bad_label,
        "--task",
        "response",
    ]);
    assert!(
        missing
            .stderr
            .contains("row 1 (line 3): missing field `label` (the qwen3guardtest format needs it)"),
        "{}",
        missing.stderr
    );
    let no_model = qwen3guard(&[
        "eval",
        "run",
        "--out",
        &out,
        "--dataset",
        &toxicchat,
        "--task",
        "prompt",
    ]);
    assert!(
        no_model.stderr.contains("eval run needs --model"),
        "{}",
        no_model.stderr
    );
    assert!(
        !std::path::Path::new(&out).exists(),
        "nothing is written on bad input"
    );
}

/// `eval run` killed with SIGKILL at two points of a long run, then resumed each time:
/// the file stays valid between kills (every line but a torn last one parses) and the
/// finished file is byte for byte the one an uninterrupted run writes.
#[test]
fn a_run_killed_mid_write_resumes_to_the_uninterrupted_file() {
    let scratch = Scratch::new("cli-eval-kill");
    let rows = 2000;
    let data = scratch.file("many.jsonl");
    let lines: Vec<String> = (0..rows)
        .map(|i| {
            let unsafe_ = i % 2 == 0;
            serde_json::json!({
                "message": [
                    {"role": "user", "content": format!("Question {i}: how do I fix a bike?")},
                    {"role": "assistant", "content": format!("Answer {i}: take the wheel off, patch the tube, pump it up.")}
                ],
                "label": if unsafe_ { "Unsafe" } else { "Safe" },
                "unsafe_start_index": unsafe_.then_some(3),
                "unsafe_end_index": unsafe_.then_some(5),
            })
            .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let stream = model("stream");
    let run = |out: &str| {
        let mut command = common::command();
        command
            .args(["eval", "run", "--model", &stream, "--dataset", &data])
            .args(["--task", "response", "--out", out])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    let whole = scratch.file("whole.jsonl");
    assert!(run(&whole).status().unwrap().success());
    let expected = std::fs::read_to_string(&whole).unwrap();
    assert_eq!(expected.lines().count(), rows);

    let out = scratch.file("killed.jsonl");
    common::killed::kill_and_resume(run, &out, &[rows / 4, rows * 3 / 5], &expected);
}
