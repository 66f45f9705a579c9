"""α selection cost (weights=auto / dev): its own table, block bench:alpha-selection (docs/benchmarks/).

    python benchmarks/bench.py --alpha-selection [--repeats 3] [--threads 1] \
        [--update docs/benchmarks/alpha-selection.md]

The cost of choosing α per task, as a ratio to the job's scoring time (mteb.evaluate of every task), on the tiny
model and the six demo tasks with the feature cache warm (a warm-up job fills it): the ratio is then the largest,
since scoring is not slowed by any extraction. Also the criterion alone at OLMoE-1B-7B's feature sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import ROOT, median, timed, update_file

ALPHA_JOBS = {"fixed": ["weights=fixed"], "auto (calibration, default)": ["weights=auto"],
              "auto (spread)": ["weights=auto", "weights.criterion=spread"], "dev": ["weights=dev"]}


def alpha_selection_section(args, tmp: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from moee_exp.jobs.config import register
    from moee_exp.jobs.runner import run_job
    from moee_exp.scoring import weights
    from moee_exp.scoring.weights import spread_alpha

    register()
    base = ["logger=none", "progress=false", "predictions=[]", f"cache.dir={tmp / 'features'}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfgs = {k: compose("config", overrides=[*base, *v]) for k, v in ALPHA_JOBS.items()}
    out = {k: [] for k in ALPHA_JOBS}
    with contextlib.redirect_stdout(io.StringIO()):
        for cfg in cfgs.values():  # warm-up: model built, features cached, imports done
            run_job(cfg, tmp / f"warm-{time.monotonic_ns()}", "bench")
        for r in range(args.repeats):
            for name, cfg in cfgs.items():
                weights._calibration.clear()  # each job pays for its calibration α, as the first job of a process does
                t = time.perf_counter()
                rows = run_job(cfg, tmp / f"a{r}-{time.monotonic_ns()}", "bench")
                out[name].append({
                    "wall": time.perf_counter() - t,
                    "select": sum((row.get("alpha_info") or {}).get("time_s", 0.0) for row in rows),
                    "score": sum(row["eval_time_s"] for row in rows),
                })
    med = {k: {m: median([x[m] for x in v]) for m in ("wall", "select", "score")} for k, v in out.items()}
    rng = np.random.default_rng(0)  # the criterion at OLMoE-1B-7B's sizes: HS 2048, RW 16 layers x 64 experts
    feats = {"hs": rng.normal(size=(512, 2048)).astype(np.float32),
             "rw": rng.normal(size=(512, 16, 64)).astype(np.float32)}
    crit = median([timed(lambda: spread_alpha(feats)) for _ in range(5)])
    return {"median": med, "repeats": out, "criterion_512_olmoe_s": crit}


def alpha_selection_report(res: dict, args) -> str:
    m = res["median"]
    fixed = m["fixed"]["wall"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {res['machine']}; medians of {args.repeats} repeats, wall clock, "
        f"tiny model, the six demo tasks, feature cache warm. Command: `{res['command']}`",
        "",
        "| weights | α selection (s) | scoring (s) | **selection / scoring** | job wall / weights=fixed |",
        "|---|---|---|---|---|",
    ]
    for name, v in m.items():
        lines.append(f"| {name} | {v['select']:.3f} | {v['score']:.2f} | **{v['select'] / v['score']:.3f}** | "
                     f"{v['wall'] / fixed:.2f}x |")
    lines += ["", f"The auto criterion alone on 512 texts at OLMoE-1B-7B's feature sizes (HS 2048, RW 16 x 64; "
                  f"130,816 pairs): {res['criterion_512_olmoe_s'] * 1000:.0f} ms per task."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="α-selection cost (weights=auto/dev) as a ratio to scoring time")
    ap.add_argument("--alpha-selection", action="store_true", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--update", type=Path, metavar="PAGE", help="write the table into this markdown page")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="moee-bench-alpha-"))
    os.environ.setdefault("MOEE_CACHE_DIR", str(tmp / "cache"))
    try:
        res = alpha_selection_section(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["machine"] = f"{os.cpu_count()} CPU cores, torch {torch.__version__}"
    res["command"] = "python benchmarks/bench.py " + " ".join(sys.argv[1:])
    table = alpha_selection_report(res, args)
    print("\n" + table)
    if args.update:
        update_file(args.update, "alpha-selection", table)

