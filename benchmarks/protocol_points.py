"""What each point of protocol=paper is worth: scores with one point switched to its clean value at a time.

    python benchmarks/protocol_points.py [--models tiny] [--emb moee_sum] [--out protocol_points.csv]
    python benchmarks/protocol_points.py --models tiny_deepseek_moe --no-quantize

For each tiny model (random weights: the numbers show how much a point can move a score, not a real model's
magnitudes, which await a GPU run) on the bundled demo tasks, MoEE(sum) at α = 1 with PromptEOL: `paper` with the
tiny model quantized like a real one (NF4 4-bit, double quant, routers rounded through NF4), then each of the six
points switched to `clean` alone, then all of `clean`. Prints the main score per task type and the Avg (x100), and
Δ = variant − paper.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                   ("WANDB_MODE", "offline"), ("WANDB_SILENT", "true")):  # fmt: skip
    os.environ.setdefault(var, value)

import pandas as pd  # noqa: E402

from devtools.public_fixture import markdown  # noqa: E402

PAPER = ["protocol=paper", "model.quantization=4bit"]  # a tiny model quantized as protocol=paper quantizes real ones
VARIANTS = {  # name -> overrides on top of PAPER: one point switched to its clean value
    "paper": [],
    "1 instructions=none": ["protocol.instructions=none"],
    "2 standardize=none": ["emb.standardize=none"],
    "3 quantization=none": ["model.quantization=none"],
    "4 rw_activation=logits": ["emb.rw_activation=logits"],
    "5 text=clean": ["protocol.text=clean"],
    "6 sum_scoring=similarity": ["protocol.sum_scoring=similarity"],
    "clean": ["protocol=clean", "model.quantization=none"],
}


def run(model: str, emb: str, tmp: Path, quantize: bool = True) -> pd.DataFrame:
    from hydra import compose, initialize_config_dir

    from moee_exp.jobs.config import register
    from moee_exp.jobs.runner import run_job

    register()
    common = [f"model={model}", f"emb={emb}", "tasks=demo", "logger=none", "progress=false", "weights.alpha=1.0",
              f"paths.cache_dir={tmp / 'cache'}"]  # fmt: skip
    out = []
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        for name, overrides in VARIANTS.items():
            if name.startswith("3 ") and not quantize:
                continue
            base = PAPER if quantize else ["protocol=paper", "model.quantization=none"]
            cfg = compose("config", overrides=[*common, *base, *overrides])
            for row in run_job(cfg, tmp / f"{model}-{len(out)}", "protocol_points"):
                out.append({"model": model, "variant": name, "task_type": row["task_type"],
                            "score": 100 * row["main_score"]})  # fmt: skip
    return pd.DataFrame(out)


def table(df: pd.DataFrame) -> pd.DataFrame:
    wide = df.pivot_table(index=["model", "variant"], columns="task_type", values="score", sort=False)
    wide["Avg"] = wide.mean(axis=1)
    paper = wide.xs("paper", level="variant")
    wide["Δ Avg"] = wide["Avg"] - paper["Avg"].reindex(wide.index.get_level_values("model")).to_numpy()
    return wide.round(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny")
    parser.add_argument("--emb", default="moee_sum")
    # bitsandbytes' CPU 4-bit kernels fail on layers narrower than its block of 64 (tiny DeepSeekMoE's experts)
    parser.add_argument("--no-quantize", action="store_true", help="paper without 4-bit (point 3 not measured)")
    parser.add_argument("--out", default=None, help="also write the long table (csv)")
    parser.add_argument("--from-csv", default=None, help="print the table of an earlier --out csv, run nothing")
    args = parser.parse_args()
    if args.from_csv:
        print(markdown(table(pd.read_csv(args.from_csv)).reset_index()))
        return
    with tempfile.TemporaryDirectory(prefix="protocol-points-") as tmp:
        df = pd.concat([run(m, args.emb, Path(tmp), not args.no_quantize) for m in args.models.split(",")])
    if args.out:
        df.to_csv(args.out, index=False)
    pd.set_option("display.width", 200)
    print(f"\nMoEE ({args.emb}, α=1, PromptEOL) on the demo tasks, scores x100; one point of protocol=paper switched "
          "at a time (tiny random models: effects, not real magnitudes)\n")
    print(markdown(table(df).reset_index()))


if __name__ == "__main__":
    main()
