"""Helpers shared by the benchmarks (ours_bench.py, reference_bench.py, llamacpp_bench.py).

The definitions mirror crates/qwen3guard-cli/src/bench.rs: the same prompt and response,
the same filler token ids, 8 decoded tokens, a 512-token prefill, and medians of timed runs
after one warm-up run.
"""
import json
import os
import resource
import subprocess
import sys
import time

PROMPT = "How can I make a bomb at home with things I can buy at a hardware store?"
RESPONSE = "I can't help with that. Building explosives is dangerous and illegal."
# Cap on a Gen moderation's decoded tokens; `qwen3guard bench` reads the same variable.
MAX_NEW_TOKENS = int(os.environ.get("QWEN3GUARD_BENCH_MAX_NEW", "8"))
PREFILL_TOKENS = 512
IM_END = 151645


def filler(n):
    """Ordinary text-like token ids, as bench.rs makes them."""
    return [1000 + (i * 7919) % 50_000 for i in range(n)]


def median_ms(runs, f, warmup=1):
    """Median wall-clock milliseconds of `runs` calls of f() after `warmup` calls."""
    for _ in range(warmup):
        f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1000.0)
    times.sort()
    return times[len(times) // 2]


def peak_rss_mb():
    """Peak resident set size of this process (VmHWM) in MiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load1():
    return os.getloadavg()[0]


def builds_running():
    """Names of running rustc/cargo processes (someone's build competes for the 2 cores)."""
    out = subprocess.run(["ps", "-eo", "comm="], capture_output=True, text=True).stdout.split()
    return sorted({p for p in out if p in ("rustc", "cargo")})


def wait_quiet(max_load=0.7, poll_s=20, max_wait_s=1200, log=sys.stderr):
    """Waits until the 1-minute load is below `max_load` and no rustc/cargo runs.

    Gives up after `max_wait_s` and measures anyway; the returned record says so.
    """
    start = time.time()
    while True:
        load, builds = load1(), builds_running()
        if load < max_load and not builds:
            return {"load1_at_start": round(load, 2), "waited_s": round(time.time() - start),
                    "quiet": True}
        if time.time() - start > max_wait_s:
            print(f"bench: still busy after {max_wait_s}s (load {load:.2f}, {builds}); measuring anyway",
                  file=log)
            return {"load1_at_start": round(load, 2), "waited_s": round(time.time() - start),
                    "quiet": False, "busy_with": builds}
        print(f"bench: waiting for a quiet machine (load {load:.2f}, builds {builds})", file=log)
        time.sleep(poll_s)


def measured_part(cmd, max_load, max_wait, label, env=None, **fields):
    """Runs one benchmark part `cmd` (which prints its figures as JSON on its last line)
    once the machine is quiet; returns its figures with how it ran, or an "error" entry
    with its last line of stderr. `fields` go first in the entry."""
    quiet = wait_quiet(max_load, max_wait_s=max_wait)
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    entry = {**fields, "machine": quiet, "load1_at_end": round(load1(), 2),
             "wall_s": round(time.time() - t, 1)}
    if p.returncode == 0:
        entry.update(json.loads(p.stdout.strip().splitlines()[-1]))
    else:
        entry["error"] = (p.stderr.strip() or f"exit {p.returncode}").splitlines()[-1]
        print(p.stderr, file=sys.stderr)
    print(f"{label}: {json.dumps(entry)[:300]}", file=sys.stderr)
    return entry
