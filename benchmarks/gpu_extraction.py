"""Extraction tokens/s on one GPU for each experts implementation and a bare forward, OLMoE-1B-7B and Qwen1.5-MoE-A2.7B
architectures with random weights (no hub), bf16 and 4-bit. Writes the GPU table of docs/benchmarks/gpu.md.

    python benchmarks/gpu_extraction.py --update docs/benchmarks/gpu.md  # one H100 / H200: < 8 min (--budget-s 420)
    python benchmarks/gpu_extraction.py --smoke             # CPU, tiny shapes, the same code path (~1 min)

Per model: the real config (the hub config.json's values, below), built on the GPU with random bf16 weights. For each
experts implementation (`grouped_mm`, transformers' default; `eager`, the per-expert Python loop; `batched_mm`,
which copies each (token, expert) pair's weights and so runs on a small batch only), our extraction
(`moee_exp.features.extract.forward_features`: router hooks, pooling) and a bare forward of the same padded batches, timed
with CUDA syncs after a warm-up; tokens/s counts real (unpadded) tokens. 4-bit goes through `moee_exp.features.loading.
load_model` (nf4, routers kept unquantized) from the random model saved to a temp dir; transformers' bitsandbytes
path quantizes nn.Linear layers only, so the 3-D expert tensors stay bf16 there. Configurations left when
--budget-s runs out are reported as not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(var, "1")

import torch  # noqa: E402

# The hub configs' values (allenai/OLMoE-1B-7B-0924, Qwen/Qwen1.5-MoE-A2.7B config.json); nothing is downloaded.
MODELS = {
    "OLMoE-1B-7B": ("olmoe", dict(
        vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=16, num_attention_heads=16,
        num_key_value_heads=16, num_experts=64, num_experts_per_tok=8, max_position_embeddings=4096,
        rope_theta=10000.0, rms_norm_eps=1e-5, norm_topk_prob=False, tie_word_embeddings=False)),
    "Qwen1.5-MoE-A2.7B": ("qwen2_moe", dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1408,
        shared_expert_intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
        num_experts=60, num_experts_per_tok=4, decoder_sparse_step=1, max_position_embeddings=8192,
        rope_theta=1000000.0, rms_norm_eps=1e-6, norm_topk_prob=False, tie_word_embeddings=False)),
}
SMOKE = dict(vocab_size=512, hidden_size=64, intermediate_size=32, moe_intermediate_size=32,
             shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
             num_experts=8)
IMPLEMENTATIONS = ("grouped_mm", "eager")
SMALL_IMPL = "batched_mm"  # S = tokens x top-k weight copies: a small batch only


def config_for(name: str, smoke: bool):
    from transformers import AutoConfig

    model_type, values = MODELS[name]
    if smoke:
        values = {**values, **{k: v for k, v in SMOKE.items() if k in values}}
        values["num_experts_per_tok"] = min(values["num_experts_per_tok"], 4)
    return AutoConfig.for_model(model_type, **values)


def batches(vocab: int, n: int, texts: int, tokens: int, seed: int = 0):
    """n padded batches of texts x tokens; half the texts 5/8 as long, left-padded as our extraction pads."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, min(vocab, 50000), (texts, tokens), generator=g)
        mask = torch.ones_like(ids)
        mask[1::2, : 3 * tokens // 8] = 0
        out.append((ids, mask))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward(lm, ids, mask, what: str):
    from moee_exp.features.extract import forward_features

    if what == "ours":
        return forward_features(lm, ids, mask)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)
    return lm.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).last_hidden_state


def timed(lm, data, what: str, repeats: int) -> dict:
    with torch.inference_mode():
        forward(lm, *data[0], what)  # warm-up: kernels chosen, memory pooled
        sync(lm.device)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for ids, mask in data:
                forward(lm, ids, mask, what)
            sync(lm.device)
            times.append(time.perf_counter() - t)
    real = sum(int(m.sum()) for _, m in data)
    s = statistics.median(times)
    return {"s": s, "tokens_per_s": real / s}


def measure(lm, args, rows: list, model: str, precision: str, deadline: float) -> None:
    vocab = lm.model.config.vocab_size
    big = batches(vocab, args.batches, args.texts, args.tokens)
    small = batches(vocab, 1, 1, args.small_tokens)
    plan = [(impl, big, f"{args.texts} x {args.tokens}") for impl in IMPLEMENTATIONS]
    plan.append((SMALL_IMPL, small, f"1 x {args.small_tokens}"))
    plan += [("grouped_mm", small, f"1 x {args.small_tokens}"), ("eager", small, f"1 x {args.small_tokens}")]
    for impl, data, shape in plan:
        row = {"model": model, "precision": precision, "impl": impl, "batch": shape}
        if time.perf_counter() > deadline:
            rows.append({**row, "skipped": "time budget"})
            continue
        try:
            lm.model.set_experts_implementation(impl)
            if lm.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            row["ours"], row["bare"] = (timed(lm, data, w, args.repeats) for w in ("ours", "bare"))
            if lm.device.type == "cuda":
                row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        except (RuntimeError, ValueError, NotImplementedError) as err:  # e.g. out of memory, no kernel for a dtype
            row["skipped"] = " ".join(str(err).split())[:120]
            if lm.device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)


def build(name: str, args, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModel

    from moee_exp.features.loading import LoadedModel
    from moee_exp.features.routers import find_routers

    config = config_for(name, args.smoke)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModel.from_config(config, dtype=dtype)
    return LoadedModel(model.eval(), None, find_routers(model), name, device, {})


def quantized(lm, tmp: Path, device: torch.device):
    """The same random weights, saved and loaded 4-bit through the runner's loader."""
    from moee_exp.features.loading import load_model
    from moee_exp.features.tiny import _train_tokenizer

    path = tmp / "model"
    lm.model.save_pretrained(path)
    _train_tokenizer(512).save_pretrained(path)  # ids 0..511: valid in both vocabularies; batches use ids directly
    return load_model(str(path), dtype="bfloat16", quantization="4bit", device=str(device))


def run(args) -> dict:
    device = torch.device("cpu" if args.smoke else args.device)
    dtype = torch.float32 if args.smoke else torch.bfloat16
    deadline = time.perf_counter() + args.budget_s
    rows: list = []
    for name in args.models.split(","):
        lm = build(name, args, device, dtype)
        measure(lm, args, rows, name, "fp32 (smoke)" if args.smoke else "bf16", deadline)
        if "4bit" in args.precisions:
            tmp = Path(tempfile.mkdtemp(prefix="moee-gpu-"))
            try:
                if time.perf_counter() > deadline:
                    rows.append({"model": name, "precision": "4-bit", "impl": "all", "skipped": "time budget"})
                    continue
                if device.type != "cuda":
                    rows.append({"model": name, "precision": "4-bit", "impl": "all", "skipped": "needs CUDA"})
                    continue
                q = quantized(lm, tmp, device)
                del lm
                torch.cuda.empty_cache()
                measure(q, args, rows, name, "4-bit (nf4)", deadline)
                del q
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        lm = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke)"
    return {"device": gpu, "torch": torch.__version__, "rows": rows, "args": {
        k: v for k, v in vars(args).items() if k not in ("update", "json")}}


def report(res: dict) -> str:
    import transformers

    a = res["args"]
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {res['device']}, torch {res['torch']}, transformers "
             f"{transformers.__version__}; random weights of the real configs; medians of {a['repeats']}. Command: "
             f"`python benchmarks/gpu_extraction.py{' --smoke' if a['smoke'] else ''}`", "",
             "| model | precision | experts implementation | batch (texts x tokens) | ours (tokens/s) | "
             "bare forward (tokens/s) | ours / bare time | peak GiB |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        head = f"| {r['model']} | {r['precision']} | `{r['impl']}` | {r.get('batch', '')} |"
        if "skipped" in r:
            lines.append(f"{head} not measured: {r['skipped']} | | | |")
            continue
        o, b = r["ours"], r["bare"]
        peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else ""
        lines.append(f"{head} {o['tokens_per_s']:,.0f} | {b['tokens_per_s']:,.0f} | {o['s'] / b['s']:.3f}x | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes of both configs, fp32: the code path only")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default="bf16,4bit")
    ap.add_argument("--texts", type=int, default=32, help="texts per batch (model.batch_size's default)")
    ap.add_argument("--tokens", type=int, default=64, help="padded length of a batch (paper texts: ~24-40 tokens)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--small-tokens", type=int, default=64, help="tokens of the one-text batch batched_mm runs on")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting configurations after this")
    ap.add_argument("--update", type=Path, metavar="PAGE",
                    help="write the table into this markdown page (bench:gpu-experts block: docs/benchmarks/gpu.md)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.smoke:
        args.texts, args.tokens, args.batches, args.small_tokens, args.repeats = 4, 16, 2, 8, 1
    res = run(args)
    table = report(res)
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if args.update:
        from benchmarks.bench import update_file

        update_file(args.update, "gpu-experts", table)
    return res


if __name__ == "__main__":
    main()
