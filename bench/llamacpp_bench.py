#!/usr/bin/env python3
"""The llama.cpp (llama-cpp-python) side of docs/BENCHMARKS.md, on GGUF conversions of the
Gen checkpoint (convert_hf_to_gguf.py --outtype f32 | bf16 | q8_0).

Figures per GGUF, with n_threads = n_threads_batch = 2 (defaults otherwise: f16 KV cache,
no flash attention):
  prefill_tokens_per_s  one eval of the 512 filler tokens from an empty context
  decode_token_ms       one eval of one token after 128/512/1024/2048 tokens of context
  chunk16_token_ms      an eval of 16 tokens after 512, divided by 16
  prompt_cold_ms        tokenize + generate (greedy, 8 tokens) + detokenize of the rendered
                        Gen prompt from an empty context
  prompt_cached_ms      the same with the task's preamble (the template text shared by every
                        prompt) already in the context: llama-cpp-python's prefix reuse
                        evaluates only the rest
  prompt_ramcache_ms    the same through create_completion() with a LlamaRAMCache that holds
                        the preamble's state (its "prompt cache"; loading the state and
                        saving the new one are part of that path)
  verdict_ms            tokenize + one eval of (prompt - preamble) + "Safety:" with the
                        preamble cached, and the three label probabilities read from the logits
  response_cached_ms    response moderation (8 tokens) with its preamble cached
The prompt text is the checkpoint's chat template rendered by transformers, the same text
as ours and the reference's; the script checks that llama.cpp tokenizes it identically.

    /work/.refvenv/bin/python bench/llamacpp_bench.py --gguf /work/models/gen-0.6B-{f32,bf16,q8_0}.gguf \
        --tokenizer /work/models/gen-0.6B --threads 2 --runs 5
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (MAX_NEW_TOKENS, PREFILL_TOKENS, PROMPT, RESPONSE, filler, median_ms,  # noqa: E402
                    measured_part, peak_rss_mb)

GREEDY = dict(temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def bench_one(args, gguf):
    import numpy as np
    from llama_cpp import Llama, LlamaRAMCache
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(args.tokenizer)
    t = time.perf_counter()
    llm = Llama(model_path=gguf, n_ctx=args.n_ctx, n_batch=512, n_ubatch=512, n_threads=args.threads,
                n_threads_batch=args.threads, verbose=False)
    load_s = time.perf_counter() - t
    n_vocab = llm.n_vocab()

    def render(messages):
        return hf.apply_chat_template(messages, tokenize=False)

    def tok(text):
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    prompt_msgs = [{"role": "user", "content": PROMPT}]
    response_msgs = prompt_msgs + [{"role": "assistant", "content": RESPONSE}]
    prompt_text, response_text = render(prompt_msgs), render(response_msgs)
    for text in (prompt_text, response_text):
        assert tok(text) == hf(text, add_special_tokens=False).input_ids, "tokenizations differ"
    # The preamble of a task: the tokens shared by every conversation of that task.
    prompt_pre = common_prefix(tok(prompt_text), tok(render([{"role": "user", "content": "x"}])))
    response_pre = common_prefix(tok(response_text), tok(render(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])))
    safety = tok("Safety:")
    labels = [tok(f"Safety: {lab}")[len(safety)] for lab in ("Safe", "Unsafe", "Controversial")]

    def moderate(text):
        ids = tok(text)
        out = []
        for token in llm.generate(ids, **GREEDY):
            if token == llm.token_eos() or len(out) == MAX_NEW_TOKENS:
                break
            out.append(token)
            if len(out) == MAX_NEW_TOKENS:
                break
        return llm.detokenize(out).decode("utf-8", errors="ignore"), len(out)

    def with_preamble(n_pre, text):
        pre_ids = tok(text)[:n_pre]

        def setup():
            # Keep only the preamble in the context (evaluated once, by the warm-up run);
            # generate()'s prefix match then evaluates the rest.
            if llm.n_tokens < n_pre or list(llm._input_ids[:n_pre]) != pre_ids:
                llm.reset()
                llm.eval(pre_ids)
            llm.n_tokens = n_pre
        return setup

    def cold(text):
        llm.reset()
        return moderate(text)

    res, generated = {}, {}
    setup_prompt = with_preamble(prompt_pre, prompt_text)
    setup_response = with_preamble(response_pre, response_text)

    def prompt_cached():
        setup_prompt()
        generated["prompt"] = moderate(prompt_text)

    def response_cached():
        setup_response()
        generated["response"] = moderate(response_text)

    def verdict():
        setup_prompt()
        ids = tok(prompt_text) + safety
        llm.eval(ids[prompt_pre:])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))[labels].astype(np.float64)
        p = np.exp(logits - logits.max())
        return p / p.sum()

    # create_completion() with a LlamaRAMCache seeded with the preamble's state.
    llm.reset()
    llm.eval(tok(prompt_text)[:prompt_pre])
    preamble_state = llm.save_state()

    def ramcache_run():
        llm.reset()  # nothing live: the state must come from the cache
        cache = LlamaRAMCache(capacity_bytes=1 << 30)
        cache[tok(prompt_text)[:prompt_pre]] = preamble_state
        llm.set_cache(cache)
        t = time.perf_counter()
        out = llm.create_completion(prompt_text, max_tokens=MAX_NEW_TOKENS, temperature=0.0, top_k=1,
                                    top_p=1.0, min_p=0.0, repeat_penalty=1.0)
        dt = (time.perf_counter() - t) * 1000
        llm.set_cache(None)
        generated["ramcache"] = (out["choices"][0]["text"], out["usage"]["completion_tokens"])
        return dt

    res["prompt_cold_ms"] = median_ms(args.runs, lambda: generated.__setitem__("cold", cold(prompt_text)))
    res["prompt_cached_ms"] = median_ms(args.runs, prompt_cached)
    ram = [ramcache_run() for _ in range(args.runs + 1)][1:]
    res["prompt_ramcache_ms"] = sorted(ram)[len(ram) // 2]
    res["verdict_ms"] = median_ms(args.runs, verdict)
    res["response_cached_ms"] = median_ms(args.runs, response_cached)

    def prefill():
        llm.reset()
        llm.eval(filler(PREFILL_TOKENS))
    prefill_ms = median_ms(args.runs, prefill)

    decode = {}
    for n in args.contexts:
        llm.reset()
        llm.eval(filler(n))
        decode[str(n)] = median_ms(args.runs, lambda: llm.eval([1000]))
    res["decode_token_ms"] = decode
    llm.reset()
    llm.eval(filler(512))
    res["chunk16_token_ms"] = median_ms(args.runs, lambda: llm.eval(filler(16))) / 16

    return {"gen": res, "generated": {k: list(v) for k, v in generated.items()},
            "prefill_tokens_per_s": PREFILL_TOKENS / (prefill_ms / 1000),
            "prompt_tokens": len(tok(prompt_text)), "prompt_preamble_tokens": prompt_pre,
            "response_tokens": len(tok(response_text)), "response_preamble_tokens": response_pre,
            "gguf_bytes": os.path.getsize(gguf), "load_s": load_s, "peak_rss_mb": peak_rss_mb(),
            "settings": {"n_ctx": args.n_ctx, "n_batch": 512, "n_ubatch": 512, "flash_attn": False,
                         "kv_type": "f16 (default)", "mmap": True}}


def system_info():
    try:
        import llama_cpp
        info = llama_cpp.llama_print_system_info()
        return {"llama_cpp_python": llama_cpp.__version__,
                "system_info": info.decode() if isinstance(info, bytes) else str(info)}
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", nargs="+", default=[f"/work/models/gen-0.6B-{t}.gguf" for t in ("f32", "bf16", "q8_0")])
    ap.add_argument("--tokenizer", default="/work/models/gen-0.6B")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--contexts", default="128,512,1024,2048")
    ap.add_argument("--max-load", type=float, default=0.7)
    ap.add_argument("--max-wait", type=int, default=1200)
    ap.add_argument("--part", help=argparse.SUPPRESS)  # internal: one GGUF in this process
    args = ap.parse_args()
    args.contexts = [int(x) for x in args.contexts.split(",")]

    if args.part:
        print(json.dumps(bench_one(args, args.part)))
        return

    report = {"tool": "llama.cpp", "versions": system_info(), "threads": args.threads, "runs": args.runs,
              "parts": {}}
    for gguf in args.gguf:
        name = Path(gguf).stem.rsplit("-", 1)[-1]  # gen-0.6B-q8_0 -> q8_0
        cmd = [sys.executable, __file__, "--part", gguf] + sys.argv[1:]
        report["parts"][name] = measured_part(cmd, args.max_load, args.max_wait, f"llama.cpp {name}", gguf=gguf)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
