"""Extraction under each experts implementation of the installed transformers, on CPU, against a bare forward and the
machine's limit (the `experts` section of benchmarks/bench.py; numbers in docs/benchmarks/experts.md).

    python benchmarks/bench.py --sections experts --threads 1 --repeats 5 --update docs/benchmarks/experts.md

The model: OLMoE-1B-7B's layer shapes (hidden 2048, 16 heads, 64 experts, top-8, expert width 1024) with
--experts-layers layers (default 2, so it fits a small machine: ~0.4 B parameters, 1.6 GB in float32), random
weights, built once; the implementation is switched on the same weights with `set_experts_implementation`, which is
what `from_pretrained(..., experts_implementation=)` and `model.experts_implementation` select. For each
implementation: tokens/s of our extraction (`forward_features`: hooks, pooling) and of a bare forward on the same
padded batch, interleaved, medians. The limit: active FLOPs per token (2 x the parameters a token multiplies:
attention projections, router, top-8 experts; plus attention's scores) over a measured matmul peak of this CPU
(torch.mm, 2048 x 2048 float32, same threads).
"""

from __future__ import annotations

import statistics
import time

import torch

IMPLEMENTATIONS = ("eager", "grouped_mm", "batched_mm")  # the ones with a CPU path (deepgemm / sonicmoe: CUDA)
OLMOE_LAYER = {"hidden_size": 2048, "intermediate_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 16,
               "num_experts": 64, "num_experts_per_tok": 8}


def build(layers: int, seed: int = 0, dtype=torch.float32, **overrides):
    """A random OLMoE of OLMoE-1B-7B's layer shapes as a LoadedModel (no tokenizer: batches are token ids)."""
    from transformers import OlmoeConfig, OlmoeModel

    from moee_exp.features.loading import LoadedModel
    from moee_exp.features.routers import find_routers

    cfg = OlmoeConfig(**{**OLMOE_LAYER, "num_hidden_layers": layers, "vocab_size": 1024, **overrides})
    torch.manual_seed(seed)
    model = OlmoeModel(cfg).to(dtype).eval()
    return LoadedModel(model, None, find_routers(model), "random-olmoe", torch.device("cpu"), {})


def active_flops_per_token(cfg, context: float) -> float:
    """2 x the weights one token multiplies (no embedding, no LM head), plus attention's QK^T and AV over ``context``."""
    h, i, k = cfg.hidden_size, cfg.intermediate_size, cfg.num_experts_per_tok
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    per_layer = 2 * (h * h * 2 + h * kv * 2 + h * cfg.num_experts + k * 3 * h * i) + 2 * 2 * context * h
    return per_layer * cfg.num_hidden_layers


def matmul_peak(n: int = 2048, repeats: int = 5, clock=time.perf_counter) -> float:
    """FLOP/s of torch.mm on n x n float32 (the best of ``repeats``: the kernel's own speed, not the neighbours')."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        torch.mm(a, b)
        best = min(best, clock() - t)
    return 2 * n**3 / best


def batch(cfg, texts: int, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, cfg.vocab_size, (texts, tokens), generator=g)
    mask = torch.ones_like(ids)
    for row in range(1, texts, 2):  # half the texts 3/4 long, left-padded as our extraction pads
        mask[row, : tokens // 4] = 0
    return ids, mask


def run(lm, impl: str, ids, mask, what: str):
    from moee_exp.features.extract import forward_features

    lm.model.set_experts_implementation(impl)
    with torch.inference_mode():
        if what == "ours":
            return forward_features(lm, ids, mask)
        position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)
        return lm.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False)


def measure(lm, impls, ids, mask, repeats: int, clock) -> dict:
    times = {(impl, what): [] for impl in impls for what in ("ours", "bare")}
    for key in times:  # warm-up (and the first call's lazy set-up) untimed
        run(lm, *key[:1], ids, mask, key[1])
    for _ in range(repeats):
        for key in times:
            t = clock()
            run(lm, key[0], ids, mask, key[1])
            times[key].append(clock() - t)
    real = int(mask.sum())
    return {f"{impl}/{what}": {"s": statistics.median(v), "tokens_per_s": real / statistics.median(v)}
            for (impl, what), v in times.items()}


def host_overhead(clock, repeats: int, layers: int = 4, texts: int = 32, tokens: int = 32) -> dict:
    """Seconds per decoder layer of a forward pass whose arithmetic is negligible (hidden 64, expert width 32) but
    whose routing is OLMoE's (64 experts, top-8, a batch of 32 x 32 tokens hits every expert): the host's cost of
    dispatching the ops, per implementation, the term that dominates the GPU roofline for short texts."""
    lm = build(layers, hidden_size=64, intermediate_size=32, num_attention_heads=4, num_key_value_heads=4)
    ids, mask = batch(lm.model.config, texts, tokens)
    res = measure(lm, ("eager", "grouped_mm"), ids, mask, repeats, clock)
    return {k: v["s"] / layers for k, v in res.items()}


def section(args, clock, log=print) -> dict:
    layers = args.experts_layers
    lm = build(layers)
    cfg = lm.model.config
    texts, tokens = args.experts_batch
    ids, mask = batch(cfg, texts, tokens)
    peak = matmul_peak(clock=clock)
    real = int(mask.sum())
    flops = active_flops_per_token(cfg, context=real / texts)
    log(f"  experts: matmul peak {peak / 1e9:.1f} GFLOP/s; {flops / 1e9:.2f} GFLOP per token", flush=True)
    out = {"layers": layers, "batch": [texts, tokens], "real_tokens": real, "peak_flops": peak,
           "flops_per_token": flops, "limit_tokens_per_s": peak / flops, "threads": torch.get_num_threads(),
           "default": lm.model.config._experts_implementation}
    # batched_mm gathers each (token, expert) pair's weights: S = tokens x top-k copies of 3 x 2048 x 1024 floats
    # (25 MB each), so it runs only on a few tokens here; eager and grouped_mm also run there for comparison.
    out["main"] = measure(lm, ("eager", "grouped_mm"), ids, mask, args.repeats, clock)
    small_ids, small_mask = batch(cfg, 1, args.experts_small_tokens)
    out["small"] = measure(lm, IMPLEMENTATIONS, small_ids, small_mask, args.repeats, clock)
    out["small_tokens"] = int(small_mask.sum())
    out["small_limit_tokens_per_s"] = peak / active_flops_per_token(cfg, context=out["small_tokens"])
    out["host_per_layer_s"] = host_overhead(clock, max(args.repeats, 5))
    for name, res in (("main", out["main"]), ("small", out["small"])):
        log(f"  experts {name}: " + ", ".join(f"{k} {v['tokens_per_s']:.0f} tok/s" for k, v in res.items()), flush=True)
    return out


def report(res: dict) -> str:
    lim = res["limit_tokens_per_s"]
    texts, tokens = res["batch"]
    lines = [
        f"Random OLMoE with OLMoE-1B-7B's layer shapes (hidden 2048, 64 experts, top-8, expert width 1024), "
        f"{res['layers']} layers, float32; {res['threads']} thread(s). Matmul peak of this CPU (torch.mm 2048^2 fp32, "
        f"best of 5): **{res['peak_flops'] / 1e9:.1f} GFLOP/s**; active FLOPs per token "
        f"{res['flops_per_token'] / 1e9:.3f} G, so the limit is **{lim:.0f} tokens/s**. transformers' default here: "
        f"`{res['default']}`.",
        "",
        "| batch | experts implementation | ours (tokens/s) | bare forward (tokens/s) | ours / bare time | "
        "fraction of the limit (ours) |",
        "|---|---|---|---|---|---|",
    ]
    for name, label, limit in (("main", f"{texts} texts x {tokens} tokens ({res['real_tokens']} real)", lim),
                               ("small", f"1 text x {res['small_tokens']} tokens", res["small_limit_tokens_per_s"])):
        r = res[name]
        impls = sorted({k.split("/")[0] for k in r}, key=lambda i: -r[f"{i}/ours"]["tokens_per_s"])
        for impl in impls:
            o, b = r[f"{impl}/ours"], r[f"{impl}/bare"]
            lines.append(f"| {label} | `{impl}` | {o['tokens_per_s']:.0f} | {b['tokens_per_s']:.0f} | "
                         f"{o['s'] / b['s']:.3f}x | {o['tokens_per_s'] / limit:.0%} |")
    h = res.get("host_per_layer_s")
    if h:
        lines += ["", "Host cost per decoder layer (hidden 64, so the arithmetic is negligible; OLMoE's 64 experts, top-8, "
                  "32 x 32 tokens, every expert hit): " + ", ".join(
                      f"`{k.split('/')[0]}` {v * 1e3:.2f} ms" for k, v in h.items() if k.endswith("/ours")) + "."]
    return "\n".join(lines)
