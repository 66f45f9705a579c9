"""Shared helpers of the benchmark sections (benchmarks/bench.py runs them): texts, padded batches, the tiny models
(BIG_TINY: a larger tiny OLMoE) and OLMoE-1B-7B's architecture with random weights (build_olmoe_full; see
`bench.py --help` for --model), timers (CLOCK: wall time, or CPU time with --threads 1 on a CPU), and publishing a
section's table (into the docs/benchmarks/ page given by --update, between `<!-- bench:<label> -->` markers).
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import time
from pathlib import Path

import torch

from moee_exp.features.extract import length_batches, prompt_texts
from moee_exp.features.prompts import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]

TEMPLATE = TEMPLATES["prompteol"]
BIG_TINY = {  # a larger tiny OLMoE: compute, not Python overhead, dominates its forward pass
    "model_type": "olmoe",
    "seed": 0,
    "vocab_size": 512,
    "config": {
        "hidden_size": 512,
        "intermediate_size": 256,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "num_experts": 16,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 2048,
        "initializer_range": 0.02,
    },
}


# -- data ------------------------------------------------------------------------------------------------------------


def demo_texts() -> list[str]:
    """Every text of the bundled demo tasks (strings of 16+ characters: labels are shorter)."""
    out: list[str] = []

    def walk(x):
        if isinstance(x, str):
            if len(x) >= 16:
                out.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for path in sorted((ROOT / "moee_exp/data/demo").glob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return list(dict.fromkeys(out))


def mixed_texts(n: int = 1000, max_join: int = 16, seed: int = 0) -> list[str]:
    """Demo texts plus texts made of 1..max_join demo texts joined: lengths from ~10 to ~500 tokens, shuffled."""
    base = demo_texts()
    rng = random.Random(seed)
    out = list(base)
    while len(out) < n:
        out.append(" ".join(rng.sample(base, rng.randint(1, max_join))))
    rng.shuffle(out)
    return out[:n]


def long_texts(n: int, seed: int = 1) -> list[str]:
    base = demo_texts()
    rng = random.Random(seed)
    return [" ".join(rng.sample(base, rng.randint(8, 16))) for _ in range(n)]


def padded_batches(lm, texts: list[str], batch_size: int, max_length: int = 512):
    tok = lm.tokenizer
    prompted = prompt_texts(texts, TEMPLATE, tok, max_length).texts
    enc = tok(prompted, truncation=True, max_length=max_length)["input_ids"]
    tok.padding_side = "left"
    batches = []
    for idx in length_batches([len(e) for e in enc], batch_size):
        b = tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
        batches.append((b["input_ids"].to(lm.device), b["attention_mask"].to(lm.device)))
    return prompted, batches


# -- models ----------------------------------------------------------------------------------------------------------


def default_tiny_cfg() -> dict:
    import yaml

    from moee_exp.jobs.config import ModelConfig

    cfg = dict(ModelConfig().__dict__)
    spec = yaml.safe_load((ROOT / "conf/model/tiny.yaml").read_text())
    cfg.update({k: v for k, v in spec.items() if k != "defaults"})
    cfg["cache_dir"] = os.environ.get("MOEE_CACHE_DIR", "~/.cache/moee_exp")
    return cfg


def load_tiny(spec: dict | None, cache_dir: str | Path):
    from moee_exp.features.loading import load_model
    from moee_exp.features.tiny import ensure_tiny_model

    spec = spec or default_tiny_cfg()["tiny"]
    return load_model(str(ensure_tiny_model(dict(spec), cache_dir)), device="cpu")


def build_olmoe_full(args, tmp: Path):
    """OLMoE-1B-7B's architecture (OlmoeConfig() defaults), random weights, on args.device; 4/8-bit via a save."""
    from transformers import AutoModel, OlmoeConfig

    from moee_exp.features.loading import (
        LoadedModel,
        load_model,
        resolve_device,
        resolve_dtype,
    )
    from moee_exp.features.routers import find_routers
    from moee_exp.features.tiny import _train_tokenizer

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tokenizer = _train_tokenizer(512)  # ids 0..511: all valid in OLMoE's 50304-token vocabulary
    # OlmoeConfig()'s defaults are OLMoE-1B-7B's except the expert width: 2048 there, 1024 in OLMoE-1B-7B-0924
    # (6.9 B params; with 2048 it would be 13 B).
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    config = OlmoeConfig(intermediate_size=1024, **overrides)
    torch.manual_seed(0)
    t = time.perf_counter()
    target = device if args.quantization == "none" else torch.device("cpu") if device.type == "cpu" else device
    with torch.device(target):
        model = AutoModel.from_config(config, dtype=dtype)
    model.eval()
    print(f"built OLMoE architecture ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params, "
          f"{config.num_hidden_layers} layers) on {target} in {time.perf_counter() - t:.0f} s", flush=True)
    if args.quantization == "none":
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return LoadedModel(model, tokenizer, find_routers(model), "olmoe-full-random", device, {})
    path = tmp / "olmoe-full"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return load_model(str(path), dtype=args.dtype, quantization=args.quantization, device=str(device))


# -- timing helpers --------------------------------------------------------------------------------------------------


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# With one torch thread on a CPU, the process's CPU time is the compute and is not inflated when other processes
# share the cores (wall time is); elsewhere wall time (GPU: after a synchronize). main() picks.
CLOCK = {"fn": time.perf_counter, "name": "wall time"}


def clock() -> float:
    return CLOCK["fn"]()


def timed(fn, device="cpu") -> float:
    sync(device)
    t = clock()
    fn()
    sync(device)
    return clock() - t


def median(xs) -> float:
    return statistics.median(xs)


# -- report -----------------------------------------------------------------------------------------------------------


def mib(b) -> str:
    return f"{b / 2**20:.0f} MiB"


def publish(args, res: dict, label: str, what: str, body: str) -> None:
    """Print a section's table with its date, machine and command; --update writes it into its bench:<label>
    block, --json saves every result so far."""
    table = f"Measured {time.strftime('%Y-%m-%d')} on {res['machine']}{what}. Command: `{res['command']}`\n\n{body}"
    print("\n" + table)
    if args.update:
        update_file(args.update, label, table)
        print(f"\nwritten to {args.update} (block bench:{label})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))


def update_file(path: Path, label: str, table: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = f"<!-- bench:{label} -->", f"<!-- /bench:{label} -->"
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    path.write_text(text, encoding="utf-8")

