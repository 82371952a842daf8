#!/usr/bin/env python3
"""The reference (PyTorch + transformers) side of docs/BENCHMARKS.md.

Gen: the official path (chat template -> tokenizer -> `generate()` greedy, 8 new tokens ->
decode), a single forward of the rendered prompt, the prompt + "Safety:" forward (what our
verdict-only mode computes), and a response moderation.
Stream: transformers' Qwen3Model backbone + the paper's Eq. 3 heads. The prompt forward; the
per-token cost of the reference streaming loop, which re-feeds the whole sequence for every
new token (a few tokens at 128/512/1024/2048 of context); the same with a KV cache (one
position per forward); chunks of 16 after 512 tokens; a 512-token prefill.

Each (model, dtype) part runs in its own process so that its peak RSS is its own; before
each part the script waits for a quiet machine (bench/common.py). Prints one JSON object.

    /work/.refvenv/bin/python bench/reference_bench.py --gen /work/models/gen-0.6B \
        --stream /work/models/stream-0.6B --dtypes f32,bf16 --threads 2 --runs 5
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (IM_END, MAX_NEW_TOKENS, PREFILL_TOKENS, PROMPT, RESPONSE, filler,  # noqa: E402
                    median_ms, measured_part, peak_rss_mb)

DTYPES = {"f32": "float32", "bf16": "bfloat16"}


def setup_torch(threads):
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return torch


# --------------------------------------------------------------------------------- Gen
def bench_gen(args, dtype):
    torch = setup_torch(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dt = getattr(torch, DTYPES[dtype])
    tok = AutoTokenizer.from_pretrained(args.gen)
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.gen, dtype=dt).eval()
    load_s = time.perf_counter() - t
    prompt_msgs = [{"role": "user", "content": PROMPT}]
    response_msgs = prompt_msgs + [{"role": "assistant", "content": RESPONSE}]
    generated = {}

    def moderate(messages, key):
        # The official README's path: template, tokenizer, generate, decode.
        text = tok.apply_chat_template(messages, tokenize=False)
        inputs = tok([text], return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                             pad_token_id=tok.pad_token_id or IM_END)
        new = out[0][inputs.input_ids.shape[1]:]
        generated[key] = {"prompt_tokens": int(inputs.input_ids.shape[1]), "new_tokens": len(new),
                          "text": tok.decode(new, skip_special_tokens=True)}

    text = tok.apply_chat_template(prompt_msgs, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"), text[-80:]
    prompt_ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    safety = tok("Safety:", add_special_tokens=False).input_ids
    verdict_ids = torch.cat([prompt_ids, torch.tensor([safety])], dim=1)
    prefill_ids = torch.tensor([filler(PREFILL_TOKENS)])

    with torch.inference_mode():
        res = {
            "prompt_generate_ms": median_ms(args.runs, lambda: moderate(prompt_msgs, "prompt")),
            "prompt_forward_ms": median_ms(args.runs, lambda: model(prompt_ids, logits_to_keep=1,
                                                                    use_cache=False)),
            "verdict_forward_ms": median_ms(args.runs, lambda: model(verdict_ids, logits_to_keep=1,
                                                                     use_cache=False)),
            "response_generate_ms": median_ms(args.runs, lambda: moderate(response_msgs, "response")),
        }
        prefill_ms = median_ms(args.runs, lambda: model(prefill_ids, logits_to_keep=1, use_cache=False))
    return {"gen": res, "generated": generated, "prefill_tokens_per_s": PREFILL_TOKENS / (prefill_ms / 1000),
            "prompt_tokens": prompt_ids.shape[1], "load_s": load_s, "peak_rss_mb": peak_rss_mb(),
            "attn_implementation": model.config._attn_implementation}


# ------------------------------------------------------------------------------ Stream
class StreamRef:
    """Qwen3Model backbone + the response/query heads of paper Eq. 3 (no bias; RMSNorm)."""

    def __init__(self, torch, d, dt):
        from safetensors import safe_open
        from transformers import Qwen3Model

        self.torch = torch
        self.backbone, info = Qwen3Model.from_pretrained(d, dtype=dt, output_loading_info=True)
        self.backbone.eval()
        assert not info["missing_keys"], info["missing_keys"]
        self.eps = self.backbone.config.rms_norm_eps
        self.heads = {}
        with safe_open(str(Path(d) / "model.safetensors"), "pt") as f:
            for k in f.keys():
                if not k.startswith("model.") and k != "lm_head.weight":
                    self.heads[k] = f.get_tensor(k).to(dt)
        assert len(self.heads) == 8, sorted(self.heads)

    def head(self, h, role):
        torch, w = self.torch, self.heads
        pre = "query_" if role == "query" else ""
        x = h @ w[pre + "risk_level_category_pre.weight"].T
        x32 = x.float()  # Qwen3RMSNorm: normalise in f32, scale in the weights' dtype
        x = w[pre + "risk_level_category_layernorm.weight"] * (
            x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        risk = torch.softmax((x @ w[pre + "risk_level_head.weight"].T).float(), dim=-1)
        cat = torch.softmax((x @ w[pre + "category_head.weight"].T).float(), dim=-1)
        return risk.argmax(-1), cat.argmax(-1)

    def forward(self, ids, role, past=None):
        torch = self.torch
        out = self.backbone(torch.tensor([ids]), past_key_values=past, use_cache=past is not None)
        return self.head(out.last_hidden_state[0], role), out.past_key_values

    def open_cached(self, ids):
        from transformers import DynamicCache
        past = DynamicCache(config=self.backbone.config)
        _, past = self.forward(ids, "query", past)
        return past


def bench_stream(args, dtype):
    torch = setup_torch(args.threads)
    from transformers import AutoTokenizer

    dt = getattr(torch, DTYPES[dtype])
    tok = AutoTokenizer.from_pretrained(args.stream)
    t = time.perf_counter()
    ref = StreamRef(torch, args.stream, dt)
    load_s = time.perf_counter() - t

    def open_prompt():
        # Stock Qwen3 template, no thinking; the prompt verdict is read at the <|im_end|>
        # that closes the user turn.
        text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                       add_generation_prompt=False, enable_thinking=False)
        ids = tok(text, add_special_tokens=False).input_ids
        ids = ids[:ids.index(IM_END) + 1]
        (risk, cat), _ = ref.forward(ids, "query")
        return int(risk[-1]), int(cat[-1])

    res = {}
    with torch.inference_mode():
        res["prompt_ms"] = median_ms(args.runs, open_prompt)

        # The reference streaming loop: each new token re-runs the whole sequence.
        refeed = {}
        for i, n in enumerate(args.refeed_contexts):
            ids = filler(n) + [1000]
            # A full forward of n+1 tokens per token: warm up on the shortest context only.
            refeed[str(n)] = median_ms(args.refeed_runs, lambda: ref.forward(ids, "response"),
                                       warmup=1 if i == 0 else 0)
        res["refeed_token_ms"] = refeed

        # The same per-token verdicts with a KV cache: one position per forward.
        cached = {}
        for n in args.refeed_contexts:
            past = ref.open_cached(filler(n))
            cached[str(n)] = median_ms(args.runs, lambda: ref.forward([1000], "response", past))
            del past
        res["kv_token_ms"] = cached

        past = ref.open_cached(filler(512))
        chunk = filler(16)
        res["kv_chunk16_token_ms"] = median_ms(args.runs, lambda: ref.forward(chunk, "response", past)) / 16
        del past
        prefill = filler(PREFILL_TOKENS)
        prefill_ms = median_ms(args.runs, lambda: ref.forward(prefill, "query"))
    return {"stream": res, "prefill_tokens_per_s": PREFILL_TOKENS / (prefill_ms / 1000), "load_s": load_s,
            "peak_rss_mb": peak_rss_mb(), "attn_implementation": ref.backbone.config._attn_implementation}


# -------------------------------------------------------------------------------- main
def versions():
    import torch
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen", default="/work/models/gen-0.6B")
    ap.add_argument("--stream", default="/work/models/stream-0.6B")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--models", default="gen,stream")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--refeed-runs", type=int, default=3, help="timed tokens per re-feed context")
    ap.add_argument("--refeed-contexts", default="128,512,1024,2048")
    ap.add_argument("--max-load", type=float, default=0.7)
    ap.add_argument("--max-wait", type=int, default=1200)
    ap.add_argument("--part", help=argparse.SUPPRESS)  # internal: MODEL:DTYPE in this process
    args = ap.parse_args()
    args.refeed_contexts = [int(x) for x in args.refeed_contexts.split(",")]

    if args.part:
        model, dtype = args.part.split(":")
        out = (bench_gen if model == "gen" else bench_stream)(args, dtype)
        print(json.dumps(out))
        return

    report = {"tool": "pytorch", "versions": versions(), "threads": args.threads, "runs": args.runs,
              "refeed_runs": args.refeed_runs, "parts": {}}
    for model in args.models.split(","):
        for dtype in args.dtypes.split(","):
            cmd = [sys.executable, __file__, "--part", f"{model}:{dtype}"] + sys.argv[1:]
            report["parts"][f"{model}-{dtype}"] = measured_part(
                cmd, args.max_load, args.max_wait, f"reference {model} {dtype}",
                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
