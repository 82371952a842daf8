//! The command-line contract: the JSON documents `moderate`, `stream` and `render` print,
//! the one-line human output, and how bad input fails (non-zero exit, one `error:` line on
//! stderr, nothing on stdout, never a panic). Runs the built binary on the engine's
//! fixture checkpoints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

mod common;
use common::{qwen3guard, qwen3guard_with};

/// Runs and parses stdout as one JSON document, failing with stderr if the run failed.
fn json_of(args: &[&str]) -> Value {
    let out = qwen3guard(args);
    assert!(out.success, "{args:?} failed: {}", out.stderr);
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "--json prints one line: {}",
        out.stdout
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// `crates/qwen3guard/tests/fixtures/<name>` as a string argument.
fn fixture(name: &str) -> String {
    fixture_path(name).to_str().unwrap().to_string()
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../qwen3guard/tests/fixtures")
        .join(name)
}

/// A file in a scratch directory unique to this process and `tag`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, contents: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qwen3guard-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{tag}.json"));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn assert_keys(what: &str, value: &Value, expected: &[&str]) {
    assert_eq!(
        keys(value),
        expected.iter().copied().collect::<BTreeSet<_>>(),
        "{what}: {value}"
    );
}

/// `{Safe, Unsafe, Controversial}`, each in [0, 1], summing to 1.
fn assert_distribution(what: &str, probs: &Value) {
    assert_keys(what, probs, &["Safe", "Unsafe", "Controversial"]);
    let mut sum = 0.0;
    for label in ["Safe", "Unsafe", "Controversial"] {
        let p = probs[label]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}.{label}: {probs}"));
        assert!((0.0..=1.0).contains(&p), "{what}.{label} = {p}");
        sum += p;
    }
    assert!((sum - 1.0).abs() < 1e-4, "{what} sums to {sum}");
}

fn assert_severity(what: &str, value: &Value) {
    let level = value.as_str().unwrap_or_else(|| panic!("{what}: {value}"));
    assert!(
        ["Safe", "Unsafe", "Controversial"].contains(&level),
        "{what}: {level}"
    );
}

/// The whole `moderate --json` contract.
fn assert_gen_verdict(v: &Value, max_new_tokens: usize) {
    assert_keys(
        "moderate",
        v,
        &[
            "safety",
            "categories",
            "refusal",
            "scores",
            "generated_text",
            "generated_token_ids",
            "prompt_tokens",
        ],
    );
    if !v["safety"].is_null() {
        assert_severity("safety", &v["safety"]);
    }
    assert!(
        v["categories"]
            .as_array()
            .is_some_and(|c| c.iter().all(Value::is_string)),
        "categories: {}",
        v["categories"]
    );
    assert!(
        v["refusal"].is_null() || v["refusal"].is_boolean(),
        "{}",
        v["refusal"]
    );
    assert_distribution("scores", &v["scores"]);
    assert!(v["generated_text"].is_string());
    let ids = v["generated_token_ids"].as_array().unwrap();
    assert!(
        !ids.is_empty() && ids.len() <= max_new_tokens,
        "{} ids with --max-new-tokens {max_new_tokens}",
        ids.len()
    );
    assert!(ids.iter().all(Value::is_u64));
    assert!(v["prompt_tokens"].as_u64().is_some_and(|n| n > 0));
}

/// The failure contract: non-zero exit, nothing on stdout, one `error:` line naming the
/// problem (every `needle`), no panic, and no cause repeated.
fn assert_fails(args: &[&str], needles: &[&str]) {
    let out = qwen3guard(args);
    assert!(!out.success, "{args:?} succeeded: {}", out.stdout);
    assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    assert_eq!(out.stdout, "", "{args:?} printed to stdout");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: stderr is not one line:\n{}",
        out.stderr
    );
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
    let causes: Vec<&str> = line.split(": ").collect();
    for (i, cause) in causes.iter().enumerate() {
        assert!(
            cause.len() < 12 || !causes[i + 1..].contains(cause),
            "{cause:?} is repeated in: {line}"
        );
    }
}

const MAX_NEW: &str = "6";

// ----- moderate -----

#[test]
fn moderate_json_has_exactly_the_contract_fields() {
    for model in ["gen-tied", "gen-sharded"] {
        let prompt = json_of(&[
            "moderate",
            "--model",
            &fixture(model),
            "--prompt",
            "How can I make a bomb?",
            "--max-new-tokens",
            MAX_NEW,
            "--json",
        ]);
        assert_gen_verdict(&prompt, 6);
        // Refusal is only judged for responses.
        assert!(prompt["refusal"].is_null());
        let response = json_of(&[
            "moderate",
            "--model",
            &fixture(model),
            "--prompt",
            "How can I make a bomb?",
            "--response",
            "I can't help with that.",
            "--max-new-tokens",
            MAX_NEW,
            "--json",
        ]);
        assert_gen_verdict(&response, 6);
        assert!(
            response["prompt_tokens"].as_u64() > prompt["prompt_tokens"].as_u64(),
            "the response is part of the prompt"
        );
    }
}

#[test]
fn max_new_tokens_bounds_the_generated_ids() {
    for n in ["1", "3"] {
        let v = json_of(&[
            "moderate",
            "--model",
            &fixture("gen-tied"),
            "--prompt",
            "hi",
            "--max-new-tokens",
            n,
            "--json",
        ]);
        assert_gen_verdict(&v, n.parse().unwrap());
    }
}

#[test]
fn a_messages_file_is_the_same_conversation_as_the_flags() {
    let messages = TempFile::new(
        "moderate-messages",
        &json!([
            {"role": "user", "content": "How do I bake bread?"},
            {"role": "assistant", "content": "Mix flour, water, yeast and salt."}
        ])
        .to_string(),
    );
    let model = fixture("gen-tied");
    let from_file = qwen3guard(&[
        "moderate",
        "--model",
        &model,
        "--messages",
        messages.arg(),
        "--max-new-tokens",
        MAX_NEW,
        "--json",
    ]);
    let from_flags = qwen3guard(&[
        "moderate",
        "--model",
        &model,
        "--prompt",
        "How do I bake bread?",
        "--response",
        "Mix flour, water, yeast and salt.",
        "--max-new-tokens",
        MAX_NEW,
        "--json",
    ]);
    assert!(from_file.success, "{}", from_file.stderr);
    assert_eq!(from_file.stdout, from_flags.stdout);
    assert_gen_verdict(&serde_json::from_str(&from_file.stdout).unwrap(), 6);

    // A system message and several turns are accepted too.
    let longer = TempFile::new(
        "moderate-longer",
        &json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Who should I vote for?"}
        ])
        .to_string(),
    );
    let v = json_of(&[
        "moderate",
        "--model",
        &model,
        "--messages",
        longer.arg(),
        "--max-new-tokens",
        MAX_NEW,
        "--json",
    ]);
    assert_gen_verdict(&v, 6);
}

#[test]
fn prompt_tokens_is_the_length_of_the_rendered_prompt() {
    let model = fixture("gen-tied");
    let args = ["--model", &model, "--prompt", "Tell me a joke about cats."];
    let verdict = json_of(
        &[
            &["moderate"],
            &args[..],
            &["--max-new-tokens", "1", "--json"],
        ]
        .concat(),
    );
    let rendered = json_of(&[&["render"], &args[..], &["--json"]].concat());
    assert_eq!(
        verdict["prompt_tokens"].as_u64().unwrap() as usize,
        rendered["token_ids"].as_array().unwrap().len()
    );
}

#[test]
fn bf16_runs() {
    let v = json_of(&[
        "moderate",
        "--model",
        &fixture("gen-tied"),
        "--prompt",
        "How can I make a bomb?",
        "--max-new-tokens",
        "3",
        "--dtype",
        "bf16",
        "--json",
    ]);
    assert_gen_verdict(&v, 3);
}

#[test]
fn moderate_without_json_prints_one_short_line() {
    let out = qwen3guard(&[
        "moderate",
        "--model",
        &fixture("gen-tied"),
        "--prompt",
        "How can I make a bomb?",
        "--max-new-tokens",
        "12",
    ]);
    assert!(out.success, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    let line = lines[0];
    assert!(line.chars().count() <= 200, "{} chars: {line}", line.len());
    assert!(
        ["Safe", "Unsafe", "Controversial", "unparsed"]
            .iter()
            .any(|s| line.starts_with(s)),
        "{line}"
    );
    assert!(line.contains("P safe"), "{line}");
}

// ----- stream -----

const STREAM_PROMPT: &str = "How do I bake bread?";
const STREAM_RESPONSE: &str =
    "Mix flour, water, yeast and salt, knead, let it rise, then bake it in a hot oven.";

fn stream_json(model: &str, prompt: &str, response: Option<&str>, chunk: &str) -> Value {
    let model = fixture(model);
    let mut args = vec![
        "stream", "--model", &model, "--prompt", prompt, "--chunk", chunk,
    ];
    if let Some(response) = response {
        args.extend(["--response", response]);
    }
    args.push("--json");
    json_of(&args)
}

fn rendered_ids(model: &str, prompt: &str, response: Option<&str>) -> Vec<u64> {
    let model = fixture(model);
    let mut args = vec!["render", "--model", &model, "--prompt", prompt];
    if let Some(response) = response {
        args.extend(["--response", response]);
    }
    args.push("--json");
    let v = json_of(&args);
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect()
}

#[test]
fn stream_json_has_the_contract_fields_and_covers_the_response() {
    let report = stream_json("stream", STREAM_PROMPT, Some(STREAM_RESPONSE), "1");
    assert_keys(
        "stream",
        &report,
        &["prompt", "response_start_index", "tokens", "response"],
    );

    let prompt = &report["prompt"];
    assert_keys(
        "prompt",
        prompt,
        &[
            "risk_level",
            "risk_probs",
            "category",
            "category_prob",
            "token_index",
        ],
    );
    assert_severity("prompt.risk_level", &prompt["risk_level"]);
    assert_distribution("prompt.risk_probs", &prompt["risk_probs"]);
    assert!(prompt["category"].is_string());
    assert!(prompt["category_prob"]
        .as_f64()
        .is_some_and(|p| (0.0..=1.0).contains(&p)));

    // Every position from the response start to the end of the rendered conversation,
    // with the ids `render` shows.
    let ids = rendered_ids("stream", STREAM_PROMPT, Some(STREAM_RESPONSE));
    let start = report["response_start_index"].as_u64().unwrap() as usize;
    assert!(prompt["token_index"].as_u64().unwrap() < start as u64);
    let tokens = report["tokens"].as_array().unwrap();
    assert_eq!(
        tokens.len(),
        ids.len() - start,
        "positions {start}..{}",
        ids.len()
    );
    for (k, token) in tokens.iter().enumerate() {
        let what = format!("tokens[{k}]");
        assert_keys(
            &what,
            token,
            &[
                "index",
                "token_id",
                "text",
                "risk_level",
                "risk_probs",
                "category",
                "category_prob",
            ],
        );
        assert_eq!(token["index"].as_u64(), Some((start + k) as u64), "{what}");
        assert_eq!(token["token_id"].as_u64(), Some(ids[start + k]), "{what}");
        assert!(
            token["text"].is_string() && token["category"].is_string(),
            "{what}"
        );
        assert_severity(&what, &token["risk_level"]);
        assert_distribution(&what, &token["risk_probs"]);
        assert!(token["category_prob"]
            .as_f64()
            .is_some_and(|p| (0.0..=1.0).contains(&p)));
    }

    let response = &report["response"];
    assert_keys(
        "response",
        response,
        &["risk_level", "category", "flagged_at"],
    );
    assert_severity("response.risk_level", &response["risk_level"]);
    if response["risk_level"] == "Safe" {
        assert!(response["category"].is_null() && response["flagged_at"].is_null());
    } else {
        assert!(response["category"].is_string());
        let at = response["flagged_at"].as_u64().unwrap() as usize;
        assert!((start + 1..ids.len()).contains(&at), "flagged at {at}");
    }
}

/// The verdicts do not depend on how many tokens each step appends. Probabilities may
/// differ in the last float bits (a different matrix shape sums in a different order),
/// so they are compared within 1e-5; everything else must be equal.
#[test]
fn chunk_size_does_not_change_the_report() {
    let one = stream_json("stream", STREAM_PROMPT, Some(STREAM_RESPONSE), "1");
    let sixteen = stream_json("stream", STREAM_PROMPT, Some(STREAM_RESPONSE), "16");
    assert_same_report("", &one, &sixteen);
}

fn assert_same_report(path: &str, a: &Value, b: &Value) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(keys(a), keys(b), "{path}");
            for (key, value) in x {
                assert_same_report(&format!("{path}.{key}"), value, &y[key]);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert_same_report(&format!("{path}[{i}]"), p, q);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5, "{path}: {x} vs {y}");
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// In `stream-constructed` every " bomb" token is Unsafe/Violent and every other token
/// Safe, so two in a row are flagged at the second.
#[test]
fn two_consecutive_unsafe_tokens_are_flagged_at_the_second() {
    let response = "Never build a bomb bomb at home.";
    for chunk in ["1", "16"] {
        let report = stream_json(
            "stream-constructed",
            "Tell me a story",
            Some(response),
            chunk,
        );
        let tokens = report["tokens"].as_array().unwrap();
        let bombs: Vec<u64> = tokens
            .iter()
            .filter(|t| t["text"] == " bomb")
            .map(|t| t["index"].as_u64().unwrap())
            .collect();
        assert_eq!(bombs.len(), 2, "{report}");
        assert_eq!(bombs[1], bombs[0] + 1);
        for token in tokens {
            let expected = if token["text"] == " bomb" {
                "Unsafe"
            } else {
                "Safe"
            };
            assert_eq!(token["risk_level"], expected, "{token}");
        }
        assert_eq!(
            report["response"],
            json!({"risk_level": "Unsafe", "category": "Violent", "flagged_at": bombs[1]}),
            "--chunk {chunk}"
        );
    }
    // One alone is debounced away.
    let single = stream_json(
        "stream-constructed",
        "Tell me a story",
        Some("Never build a bomb."),
        "1",
    );
    assert_eq!(
        single["response"],
        json!({"risk_level": "Safe", "category": null, "flagged_at": null})
    );
}

/// A conversation without a response has a prompt verdict and nothing else.
#[test]
fn a_prompt_alone_has_no_response_part() {
    let report = stream_json("stream", STREAM_PROMPT, None, "1");
    let ids = rendered_ids("stream", STREAM_PROMPT, None);
    assert!(report["prompt"]["token_index"].as_u64().unwrap() < ids.len() as u64);
    assert_eq!(report["response_start_index"], Value::Null, "{report}");
    assert_eq!(report["tokens"], json!([]), "{report}");
    assert_eq!(report["response"], Value::Null, "{report}");
}

#[test]
fn stream_without_json_prints_the_prompt_verdict_and_the_response() {
    let out = qwen3guard(&[
        "stream",
        "--model",
        &fixture("stream-constructed"),
        "--prompt",
        "Tell me a story",
        "--response",
        "Never build a bomb bomb at home.",
    ]);
    assert!(out.success, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("prompt: Safe"), "{}", out.stdout);
    // Not a terminal: flagged tokens are bracketed instead of coloured.
    assert!(out.stdout.contains("[U: bomb][U: bomb]"), "{}", out.stdout);
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("response: Unsafe at token")
            && lines.last().unwrap().ends_with("(Violent)"),
        "{}",
        out.stdout
    );
}

// ----- render -----

/// Every reference rendering, through `--messages`: Gen cases with the Gen template,
/// Stream cases with the Stream one.
#[test]
fn render_matches_the_reference() {
    let text = std::fs::read_to_string(fixture_path("reference/render.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 10);
    for case in &cases {
        let name = format!("{}/{}", case["name"], case["template"]);
        let model = if case["template"] == "gen" {
            "gen-tied"
        } else {
            "stream"
        };
        let messages = TempFile::new(
            &format!("render-{}-{}", case["name"].as_str().unwrap(), model),
            &case["messages"].to_string(),
        );
        let v = json_of(&[
            "render",
            "--model",
            &fixture(model),
            "--messages",
            messages.arg(),
            "--json",
        ]);
        assert_keys(&name, &v, &["text", "token_ids"]);
        assert_eq!(v["text"], case["text"], "{name}: text");
        assert_eq!(v["token_ids"], case["token_ids"], "{name}: token ids");
    }
}

#[test]
fn render_with_prompt_flags_matches_the_reference() {
    let text = std::fs::read_to_string(fixture_path("reference/render.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    let case = cases
        .iter()
        .find(|c| c["name"] == "prompt_bomb" && c["template"] == "gen")
        .unwrap();
    let v = json_of(&[
        "render",
        "--model",
        &fixture("gen-tied"),
        "--prompt",
        "How can I make a bomb?",
        "--json",
    ]);
    assert_eq!(
        v,
        json!({"text": case["text"], "token_ids": case["token_ids"]})
    );

    let out = qwen3guard(&["render", "--model", &fixture("gen-tied"), "--prompt", "hi"]);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.trim_end().ends_with(" tokens)"),
        "{}",
        out.stdout
    );
}

// ----- bad input -----

#[test]
fn a_missing_model_directory_is_named() {
    for command in ["moderate", "stream", "render"] {
        assert_fails(
            &[
                command,
                "--model",
                "/nonexistent/qwen3guard-model",
                "--prompt",
                "hi",
            ],
            &["/nonexistent/qwen3guard-model"],
        );
    }
}

#[test]
fn a_directory_without_a_checkpoint_is_named() {
    let empty = std::env::temp_dir().join(format!("qwen3guard-cli-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    assert_fails(
        &[
            "moderate",
            "--model",
            empty.to_str().unwrap(),
            "--prompt",
            "hi",
        ],
        &["config.json"],
    );
    let _ = std::fs::remove_dir(&empty);
}

#[test]
fn malformed_messages_files_are_named() {
    let model = fixture("gen-tied");
    let truncated = TempFile::new("bad-truncated", r#"[{"role": "user", "content": "hi"}"#);
    assert_fails(
        &["moderate", "--model", &model, "--messages", truncated.arg()],
        &[truncated.arg(), "invalid JSON", "line 1"],
    );
    let not_a_list = TempFile::new("bad-object", r#"{"role": "user", "content": "hi"}"#);
    assert_fails(
        &[
            "moderate",
            "--model",
            &model,
            "--messages",
            not_a_list.arg(),
        ],
        &[not_a_list.arg(), "invalid JSON"],
    );
    let missing = "/nonexistent/messages.json";
    assert_fails(
        &["moderate", "--model", &model, "--messages", missing],
        &[missing],
    );
}

#[test]
fn an_unknown_role_is_named() {
    let robot = TempFile::new("bad-role", r#"[{"role": "robot", "content": "hi"}]"#);
    for command in ["moderate", "stream", "render"] {
        let model = fixture(if command == "moderate" {
            "gen-tied"
        } else {
            "stream"
        });
        assert_fails(
            &[command, "--model", &model, "--messages", robot.arg()],
            &[robot.arg(), "robot", "user"],
        );
    }
}

#[test]
fn empty_and_misordered_conversations_are_refused() {
    let model = fixture("gen-tied");
    let empty = TempFile::new("bad-empty", "[]");
    assert_fails(
        &["moderate", "--model", &model, "--messages", empty.arg()],
        &["conversation is empty"],
    );
    let system_last = TempFile::new(
        "bad-system-last",
        r#"[{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}]"#,
    );
    assert_fails(
        &[
            "moderate",
            "--model",
            &model,
            "--messages",
            system_last.arg(),
        ],
        &["system"],
    );
}

#[test]
fn input_longer_than_the_context_is_refused() {
    // The fixtures' context is 1,024 tokens.
    let long = "word ".repeat(1100);
    assert_fails(
        &[
            "moderate",
            "--model",
            &fixture("gen-tied"),
            "--prompt",
            &long,
        ],
        &["longer than the model's context of 1024 tokens"],
    );
    assert_fails(
        &[
            "stream",
            "--model",
            &fixture("stream"),
            "--prompt",
            "hi",
            "--response",
            &long,
        ],
        &["longer than the model's context of 1024 tokens"],
    );
    assert_fails(
        &[
            "stream",
            "--model",
            &fixture("stream"),
            "--prompt",
            &long,
            "--json",
        ],
        &["longer than the model's context of 1024 tokens"],
    );
}

#[test]
fn chunk_zero_is_refused() {
    assert_fails(
        &[
            "stream",
            "--model",
            &fixture("stream"),
            "--prompt",
            "hi",
            "--chunk",
            "0",
        ],
        &["--chunk"],
    );
}

#[test]
fn the_wrong_variant_is_named() {
    assert_fails(
        &["moderate", "--model", &fixture("stream"), "--prompt", "hi"],
        &["Stream checkpoint", "Gen checkpoint"],
    );
    assert_fails(
        &[
            "stream",
            "--model",
            &fixture("gen-tied"),
            "--prompt",
            "hi",
            "--json",
        ],
        &["Gen checkpoint", "Stream checkpoint"],
    );
}

/// `--version` names the kernels' instruction set, and `QWEN3GUARD_ISA` caps it.
#[test]
fn version_names_the_instruction_set_and_the_cap_applies() {
    let out = qwen3guard(&["--version"]);
    assert!(out.success, "{}", out.stderr);
    let named = ["portable", "avx2", "avx512", "avx512-vnni", "avx512-bf16"];
    let isa = out
        .stdout
        .trim()
        .split("(kernels: ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no kernels in {:?}", out.stdout));
    assert!(named.contains(&isa), "{isa}");
    let capped = qwen3guard_with(&["--version"], &[("QWEN3GUARD_ISA", "portable")]);
    assert!(
        capped.stdout.contains("(kernels: portable)"),
        "{}",
        capped.stdout
    );
}

/// The portable loops and the processor's vector kernels give one verdict: the same
/// tokens, and label probabilities within f32 rounding in f32. In 8 bits the paths sum in
/// another order, and a last-bit difference can move an activation across a quantization
/// step in the next layer, so they agree within the precision's own drift (the parity
/// tests allow 0.05 against f32; 0.005 was seen between the paths).
#[test]
fn every_kernel_path_gives_the_same_verdict() {
    let model = fixture("gen-tied");
    for (dtype, tolerance) in [("f32", 1e-4), ("q8", 0.02)] {
        let args = [
            "moderate",
            "--model",
            &model,
            "--prompt",
            "How do I pick a lock?",
            "--dtype",
            dtype,
            "--json",
        ];
        let native = json_of(&args);
        let out = qwen3guard_with(&args, &[("QWEN3GUARD_ISA", "portable")]);
        assert!(out.success, "{}", out.stderr);
        let portable: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
        assert_eq!(
            native["generated_token_ids"], portable["generated_token_ids"],
            "{dtype}"
        );
        for label in ["Safe", "Unsafe", "Controversial"] {
            let (a, b) = (&native["scores"][label], &portable["scores"][label]);
            let (a, b) = (a.as_f64().expect("a score"), b.as_f64().expect("a score"));
            assert!((a - b).abs() <= tolerance, "{dtype} {label}: {a} vs {b}");
        }
    }
}
