"""Extraction tokens/s with NF4 experts (model.quantization=4bit) against the same model unquantized, on CPU.

    python benchmarks/quant.py [--dtype bfloat16] [--runs 3] [--texts 64]

The model: a random OLMoE of 2 layers, hidden 512, 16 experts of width 512, top-4 (every Linear and expert matrix
>= 64 wide, so everything 4-bit can quantize is quantized), saved once and loaded by ``load_model`` both ways.
Each run extracts the same texts (``extract``, batch 16); the result is the median tokens/s of the runs, each
setting's runs interleaved with the other's. 4-bit dequantizes each routed expert's matrices per batch (bitsandbytes'
``dequantize_4bit``): it saves memory, not time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPEC = {"model_type": "olmoe", "seed": 0, "vocab_size": 512,
        "config": {"hidden_size": 512, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
                   "num_key_value_heads": 8, "num_experts": 16, "num_experts_per_tok": 4,
                   "max_position_embeddings": 512, "initializer_range": 0.02}}


def main(argv=None) -> int:
    import torch

    from benchmarks.common import mixed_texts
    from moee_exp.features.extract import extract
    from moee_exp.features.loading import load_model
    from moee_exp.features.quant_experts import expert_bytes
    from moee_exp.features.tiny import ensure_tiny_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(ensure_tiny_model(SPEC, tmp))
        lms = {q: load_model(path, dtype=args.dtype, quantization=q, device="cpu") for q in ("none", "4bit")}
        texts = mixed_texts(args.texts, max_join=4)
        tokens = sum(len(ids) for ids in lms["none"].tokenizer(texts, truncation=True, max_length=512)["input_ids"])
        rates = {q: [] for q in lms}
        for q, lm in lms.items():  # warm-up
            extract(lm, texts[:4], batch_size=16, progress=False)
        for _ in range(args.runs):
            for q, lm in lms.items():
                t0 = time.perf_counter()
                extract(lm, texts, batch_size=16, progress=False)
                rates[q].append(tokens / (time.perf_counter() - t0))
        med = {q: statistics.median(r) for q, r in rates.items()}
        ebytes = {q: expert_bytes(lm.model) for q, lm in lms.items()}
    print(f"| setting ({args.dtype}, CPU, {torch.get_num_threads()} threads) | tokens/s (median of {args.runs}) "
          "| expert weight bytes |")
    print("|---|---|---|")
    for q in lms:
        print(f"| quantization={q} | {med[q]:.0f} | {ebytes[q] / 2**20:.1f} MiB |")
    print(f"4-bit / unquantized speed: {med['4bit'] / med['none']:.2f}x; expert bytes "
          f"{ebytes['4bit'] / ebytes['none']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
