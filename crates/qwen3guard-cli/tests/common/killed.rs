//! Killing a resumable command (`eval run`, `reward`) mid-write with SIGKILL, and checking
//! what it leaves: every complete line parses, what was written is a prefix of an
//! uninterrupted run's file, and running it again finishes that file byte for byte.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// Runs `run(out)` once per entry of `kill_at`, killing it with SIGKILL as soon as `out`
/// holds that many complete lines, and checks the file after each kill; then runs it to
/// the end and checks that `out` equals `expected`, an uninterrupted run's file. `run`
/// must give a command writing to `out` that resumes from what is there.
pub fn kill_and_resume(
    run: impl Fn(&str) -> Command,
    out: &str,
    kill_at: &[usize],
    expected: &str,
) {
    let rows = expected.lines().count();
    for &at in kill_at {
        assert!(at < rows, "a kill point past the end of the run");
        let mut child = run(out).spawn().unwrap();
        loop {
            let written = std::fs::read(out).map_or(0, |b| complete_lines(&b));
            if written >= at {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before it was killed (at {written} of {rows} lines)"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let text = String::from_utf8(std::fs::read(out).unwrap()).unwrap();
        let complete: Vec<&str> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .collect();
        assert!(complete.len() < rows, "killed before the end");
        for line in &complete {
            serde_json::from_str::<Value>(line).expect("every complete line is a record");
        }
        assert!(
            expected.starts_with(&complete.concat()),
            "what was written is a prefix of the uninterrupted file"
        );
    }
    assert!(
        run(out).status().unwrap().success(),
        "the resumed run failed"
    );
    assert!(
        std::fs::read_to_string(out).unwrap() == expected,
        "the resumed file differs from the uninterrupted one"
    );
}

fn complete_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&c| c == b'\n').count()
}
