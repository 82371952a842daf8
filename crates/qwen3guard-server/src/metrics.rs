//! Prometheus metrics (text exposition format), names prefixed `qwen3guard_`.
//!
//! A handful of counters and histograms behind one mutex: updates are a few per request,
//! far below the cost of a forward pass, so a lock-free design would buy nothing.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Upper bounds of the batch-size buckets.
const BATCH_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (slot, bound) in self.counts.iter_mut().zip(bounds) {
            if value <= *bound {
                *slot += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (count, bound) in self.counts.iter().zip(bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    /// (endpoint, status) -> latency histogram (its count is the request counter).
    requests: BTreeMap<(String, u16), Histogram>,
    /// Kind of batch -> sizes.
    batches: BTreeMap<&'static str, Histogram>,
    /// Category -> flagged results naming it.
    flagged: BTreeMap<String, u64>,
    /// Proxy event -> count (wait tokens count tokens).
    proxy: BTreeMap<&'static str, u64>,
    tokens: u64,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Commands waiting for the scheduler.
    pub queue_depth: AtomicUsize,
    /// Stream sessions open.
    pub open_sessions: AtomicUsize,
    /// Requests dropped unfinished because their client went away.
    pub cancelled: AtomicUsize,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        // A panic elsewhere while holding the lock leaves plain counters: still usable.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner);
    }

    /// One finished request.
    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        self.with(|m| {
            m.requests
                .entry((endpoint.to_string(), status))
                .or_default()
                .observe(&LATENCY_BUCKETS, seconds)
        });
    }

    /// One batch of `size` commands of `kind` run by the scheduler.
    pub fn batch(&self, kind: &'static str, size: usize) {
        self.with(|m| {
            m.batches
                .entry(kind)
                .or_default()
                .observe(&BATCH_BUCKETS, size as f64)
        });
    }

    /// Tokens run through a model.
    pub fn tokens(&self, count: usize) {
        self.with(|m| m.tokens += count as u64);
    }

    /// A flagged result naming `categories` (or `None` when it names none).
    pub fn flagged<'a>(&self, categories: impl IntoIterator<Item = &'a str>) {
        self.with(|m| {
            let mut any = false;
            for c in categories {
                *m.flagged.entry(c.to_string()).or_default() += 1;
                any = true;
            }
            if !any {
                *m.flagged.entry("None".into()).or_default() += 1;
            }
        });
    }

    /// `n` proxy events of `kind`: `prompt_refused`, `cut_off`, `retracted`,
    /// `interventions`, `refused_after_retries`, or `wait_tokens` (tokens generated that
    /// the client never saw because of rollbacks).
    pub fn proxy_event(&self, kind: &'static str, n: usize) {
        self.with(|m| *m.proxy.entry(kind).or_default() += n as u64);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let queue = self.queue_depth.load(Ordering::Relaxed);
        let sessions = self.open_sessions.load(Ordering::Relaxed);
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        self.with(|m| {
            out.push_str("# HELP qwen3guard_requests_total Requests by endpoint and status.\n");
            out.push_str("# TYPE qwen3guard_requests_total counter\n");
            for ((endpoint, status), h) in &m.requests {
                let _ = writeln!(
                    out,
                    "qwen3guard_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {}",
                    h.count
                );
            }
            out.push_str(
                "# HELP qwen3guard_request_duration_seconds Requests by endpoint and status.\n",
            );
            out.push_str("# TYPE qwen3guard_request_duration_seconds histogram\n");
            for ((endpoint, status), h) in &m.requests {
                let labels = format!("endpoint=\"{endpoint}\",status=\"{status}\"");
                h.render(
                    &mut out,
                    "qwen3guard_request_duration_seconds",
                    &labels,
                    &LATENCY_BUCKETS,
                );
            }
            out.push_str("# HELP qwen3guard_batch_size Commands per scheduler batch.\n");
            out.push_str("# TYPE qwen3guard_batch_size histogram\n");
            for (kind, h) in &m.batches {
                h.render(
                    &mut out,
                    "qwen3guard_batch_size",
                    &format!("kind=\"{kind}\""),
                    &BATCH_BUCKETS,
                );
            }
            out.push_str("# HELP qwen3guard_flagged_total Flagged results by category.\n");
            out.push_str("# TYPE qwen3guard_flagged_total counter\n");
            for (category, n) in &m.flagged {
                let category = category.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "qwen3guard_flagged_total{{category=\"{category}\"}} {n}"
                );
            }
            out.push_str("# HELP qwen3guard_proxy_events_total Guarded-proxy events by kind (wait_tokens counts tokens).\n");
            out.push_str("# TYPE qwen3guard_proxy_events_total counter\n");
            for (kind, n) in &m.proxy {
                let _ = writeln!(out, "qwen3guard_proxy_events_total{{kind=\"{kind}\"}} {n}");
            }
            out.push_str("# HELP qwen3guard_tokens_processed_total Tokens run through a model.\n");
            out.push_str("# TYPE qwen3guard_tokens_processed_total counter\n");
            let _ = writeln!(out, "qwen3guard_tokens_processed_total {}", m.tokens);
        });
        out.push_str("# HELP qwen3guard_queue_depth Commands waiting for the scheduler.\n");
        out.push_str("# TYPE qwen3guard_queue_depth gauge\n");
        let _ = writeln!(out, "qwen3guard_queue_depth {queue}");
        out.push_str("# HELP qwen3guard_open_sessions Stream sessions open.\n");
        out.push_str("# TYPE qwen3guard_open_sessions gauge\n");
        let _ = writeln!(out, "qwen3guard_open_sessions {sessions}");
        out.push_str(
            "# HELP qwen3guard_cancelled_total Requests dropped because their client went away.\n",
        );
        out.push_str("# TYPE qwen3guard_cancelled_total counter\n");
        let _ = writeln!(out, "qwen3guard_cancelled_total {cancelled}");
        out
    }
}
