//! `qwen3guard reward` on constructed checkpoints whose verdict is known by construction
//! (Safe, Safe with a refusal, Unsafe, Controversial): the value of each formula in each
//! mode, the thinking judged as its own response, resuming, and bad lines named.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::{constructed_checkpoint, qwen3guard, Scratch};
use serde_json::Value;

/// The four checkpoints, made once per test binary (their folder lives as long as it).
fn checkpoint(name: &str) -> String {
    static MADE: OnceLock<(Scratch, Vec<(&'static str, PathBuf)>)> = OnceLock::new();
    let (_, made) = MADE.get_or_init(|| {
        let dir = Scratch::new("reward-checkpoints");
        let made = [
            ("safe", "Safety: Safe\nCategories: None\nRefusal: No"),
            ("refusal", "Safety: Safe\nCategories: None\nRefusal: Yes"),
            ("unsafe", "Safety: Unsafe\nCategories: Violent\nRefusal: No"),
            (
                "controversial",
                "Safety: Controversial\nCategories: Politically Sensitive Topics\nRefusal: No",
            ),
        ]
        .into_iter()
        .map(|(name, verdict)| (name, constructed_checkpoint(&dir, name, Some(verdict))))
        .collect();
        (dir, made)
    });
    let path = &made.iter().find(|(n, _)| *n == name).unwrap().1;
    path.to_str().unwrap().to_owned()
}

/// Two rollouts: helpfulness 3.5 without thinking, -12 with thinking and a system turn.
const ROLLOUTS: &str = r#"{"id": "a", "messages": [{"role": "user", "content": "How do I bake bread?"}], "response": "Mix flour and water.", "helpfulness": 3.5}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_end|>"}], "response": "Hello!", "thinking": "Greet back.", "helpfulness": -12}
"#;

fn lines(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn score(dir: &Scratch, model: &str, extra: &[&str]) -> Vec<Value> {
    let input = dir.file("rollouts.jsonl");
    std::fs::write(&input, ROLLOUTS).unwrap();
    let out = dir.file("rewards.jsonl");
    let _ = std::fs::remove_file(&out);
    let mut args = vec!["reward", "--model", model, "--input", &input, "--out", &out];
    args.extend(extra);
    let run = qwen3guard(&args);
    assert!(run.success, "{args:?}: {}", run.stderr);
    lines(&out)
}

#[test]
fn each_verdict_gives_the_reports_rewards_under_both_formulas_and_modes() {
    let dir = Scratch::new("reward-values");
    // (checkpoint, mode, guard-only, hybrid for helpfulness 3.5 and -12)
    let expected = [
        ("safe", "strict", 1.0, [3.5, -12.0]),
        ("safe", "loose", 1.0, [3.5, -12.0]),
        ("refusal", "strict", 1.0, [-5.0, -12.0]),
        ("refusal", "loose", 1.0, [-5.0, -12.0]),
        ("unsafe", "strict", 0.0, [-10.0, -12.0]),
        ("unsafe", "loose", 0.0, [-10.0, -12.0]),
        // Controversial is never safe for guard-only; for hybrid only under strict.
        ("controversial", "strict", 0.0, [-10.0, -12.0]),
        ("controversial", "loose", 0.0, [3.5, -12.0]),
    ];
    for (name, mode, guard_only, hybrid) in expected {
        let model = checkpoint(name);
        let what = format!("{name} {mode}");
        let got = score(&dir, &model, &["--reward", "guard_only", "--mode", mode]);
        assert_eq!(got.len(), 2, "{what}");
        for line in &got {
            assert_eq!(line["reward"], guard_only, "{what}: {line}");
        }
        let got = score(&dir, &model, &["--reward", "hybrid", "--mode", mode]);
        for ((line, value), helpfulness) in got.iter().zip(hybrid).zip([3.5, -12.0]) {
            assert_eq!(line["reward"], value, "{what} hybrid: {line}");
            assert_eq!(line["helpfulness"], helpfulness, "{what} hybrid: {line}");
        }
        let label = got[0]["response_safety"].as_str().unwrap();
        let expected_label = match name {
            "safe" | "refusal" => "Safe",
            "unsafe" => "Unsafe",
            _ => "Controversial",
        };
        assert_eq!(label, expected_label, "{what}");
        assert_eq!(got[0]["refusal"], name == "refusal", "{what}");
    }
}

#[test]
fn the_thinking_is_judged_as_a_response_of_its_own() {
    let dir = Scratch::new("reward-thinking");
    let got = score(&dir, &checkpoint("unsafe"), &[]);
    // Without thinking: no thinking verdict; with it: its own label and scores.
    assert!(got[0]["thinking_safety"].is_null());
    assert!(got[0]["scores"]["thinking"].is_null());
    assert_eq!(got[1]["thinking_safety"], "Unsafe");
    assert!(got[1]["scores"]["thinking"]["Unsafe"].as_f64().unwrap() > 0.99);
    assert_eq!(got[1]["categories"], serde_json::json!(["Violent"]));
    assert_eq!(got[0]["id"], "a");
    assert_eq!(got[1]["id"], 2, "a line without id gets its line number");
}

#[test]
fn label_only_guard_only_rewards_equal_the_decoded_ones() {
    let dir = Scratch::new("reward-label-only");
    for name in ["safe", "unsafe", "controversial"] {
        let decoded = score(&dir, &checkpoint(name), &[]);
        let label_only = score(&dir, &checkpoint(name), &["--verdict-only"]);
        for (d, l) in decoded.iter().zip(&label_only) {
            assert_eq!(d["reward"], l["reward"], "{name}");
            assert_eq!(d["response_safety"], l["response_safety"], "{name}");
        }
    }
    let refused = qwen3guard(&[
        "reward",
        "--model",
        &checkpoint("safe"),
        "--input",
        "x",
        "--out",
        "y",
        "--reward",
        "hybrid",
        "--verdict-only",
    ]);
    assert!(!refused.success);
}

#[test]
fn an_interrupted_run_resumes_with_the_same_result() {
    let dir = Scratch::new("reward-resume");
    let model = checkpoint("refusal");
    let whole = score(&dir, &model, &["--reward", "hybrid"]);
    // Interrupted while writing the second line: the first one is kept, the cut one
    // redone.
    let out = dir.file("rewards.jsonl");
    let first = serde_json::to_string(&whole[0]).unwrap();
    std::fs::write(&out, format!("{first}\n{{\"id\": 2, \"rew")).unwrap();
    let input = dir.file("rollouts.jsonl");
    let run = qwen3guard(&[
        "reward", "--model", &model, "--input", &input, "--out", &out, "--reward", "hybrid",
    ]);
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stderr.contains("1 rollouts scored (1 already in"),
        "{}",
        run.stderr
    );
    assert_eq!(lines(&out), whole);
    // Another file's output is not mixed in.
    std::fs::write(&out, "{\"id\": \"zzz\", \"reward\": 1}\n").unwrap();
    let run = qwen3guard(&[
        "reward", "--model", &model, "--input", &input, "--out", &out,
    ]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("id zzz is not in the input"),
        "{}",
        run.stderr
    );
}

/// `reward` killed with SIGKILL at two points of a long run, then resumed each time, as
/// `eval run` is (tests/eval_run.rs): the file stays valid between kills and ends byte
/// for byte as an uninterrupted run's.
#[test]
fn a_run_killed_mid_write_resumes_to_the_uninterrupted_file() {
    let dir = Scratch::new("reward-kill");
    let rows = 300;
    let input = dir.file("many.jsonl");
    let lines: Vec<String> = (0..rows)
        .map(|i| {
            serde_json::json!({
                "messages": [{"role": "user", "content": format!("Question {i}: how do I fix a bike?")}],
                "response": format!("Answer {i}: patch the tube."),
                "helpfulness": i as f64 / 10.0 - 30.0,
            })
            .to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let model = checkpoint("refusal");
    let run = |out: &str| {
        let mut command = common::command();
        command
            .args(["reward", "--model", &model, "--input", &input, "--out", out])
            .args(["--reward", "hybrid"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    let whole = dir.file("whole.jsonl");
    assert!(run(&whole).status().unwrap().success());
    let expected = std::fs::read_to_string(&whole).unwrap();
    assert_eq!(expected.lines().count(), rows);
    let out = dir.file("killed.jsonl");
    common::killed::kill_and_resume(run, &out, &[rows / 4, rows * 3 / 5], &expected);
}

#[test]
fn bad_lines_are_refused_with_the_line_and_field_named() {
    let dir = Scratch::new("reward-bad");
    let model = checkpoint("safe");
    let input = dir.file("bad.jsonl");
    let out = dir.file("never.jsonl");
    for (content, expected) in [
        ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response\": \"y\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n", "line 2: missing field `response`"),
        ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response\": \"y\", \"helpfulness\": \"lots\"}\n", "line 1: `helpfulness` must be a number"),
        ("not json\n", "line 1: not a JSON line"),
        ("{\"id\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response\": \"y\"}\n{\"id\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response\": \"y\"}\n", "id 1 appears twice"),
    ] {
        std::fs::write(&input, content).unwrap();
        let run = qwen3guard(&["reward", "--model", &model, "--input", &input, "--out", &out]);
        assert!(!run.success, "{content}");
        assert!(run.stderr.contains(expected), "{content}: {}", run.stderr);
    }
    std::fs::write(
        &input,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response\": \"y\"}\n",
    )
    .unwrap();
    let run = qwen3guard(&[
        "reward", "--model", &model, "--input", &input, "--out", &out, "--reward", "hybrid",
    ]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("rollout 1 has no `helpfulness`"),
        "{}",
        run.stderr
    );
    assert!(
        !std::path::Path::new(&out).exists(),
        "nothing is written for a refused input"
    );
}
