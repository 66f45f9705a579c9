"""Compare the label-free α criteria of weights=auto (moee_exp.scoring.weights) on the demo tasks and mteb's mock tasks.

    python benchmarks/alpha_criteria.py [--models tiny,tiny_qwen2_moe,tiny_mixtral] [--out alpha_criteria.csv]

For each tiny model (random weights: the numbers test the criteria's behaviour, not a model's quality) and each
task: the main score at every α of the grid 0.1..1.0 (the best of them is the optimistic "best α on test"), at
α = 1, and at the α each criterion picks — `spread` (per task, the task's own texts) and `calibration` (once per
model × prompt, the demo tasks' texts). Prints per criterion: the mean regret (best grid score − its score, x100),
how often it does at least as well as α = 1, and the α values it picks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
    os.environ.setdefault(var, value)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

GRID = [round(0.1 * i, 1) for i in range(1, 11)]
TYPES = {"Classification", "Clustering", "PairClassification", "Reranking", "Retrieval", "STS", "Summarization"}


class Memo:
    """A featurizer that extracts each text once for all α and criteria."""

    def __init__(self, featurizer):
        self.featurizer, self.memo, self.n_truncated = featurizer, {}, 0

    def __call__(self, texts, desc=None):
        todo = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if todo:
            feats = self.featurizer(todo)
            for i, t in enumerate(todo):
                self.memo[t] = {k: v[i] for k, v in feats.items()}
        return {k: np.stack([self.memo[t][k] for t in texts]) for k in self.featurizer.features}


def model_cfg(name: str, cache_dir: str) -> dict:
    from moee_exp.jobs.config import ModelConfig

    cfg = dict(ModelConfig().__dict__)
    cfg.update({k: v for k, v in yaml.safe_load((ROOT / "conf/model" / f"{name}.yaml").read_text()).items()
                if k != "defaults"})
    return {**cfg, "cache_dir": cache_dir}


def tasks():
    from mteb.mocks.mock_run import get_compatible_mock_tasks

    from moee_exp.scoring.demo_tasks import get_demo_tasks

    def mocks(encoder):
        return [t for t in get_compatible_mock_tasks(encoder)
                if t.metadata.type in TYPES and not t.metadata.is_multilingual
                and "Instruction" not in type(t).__name__]

    return get_demo_tasks(), mocks


def compare(models, prompt="prompteol") -> pd.DataFrame:
    from moee_exp.features.featurize import Featurizer
    from moee_exp.features.prompts import TEMPLATES
    from moee_exp.scoring.encoder import MoEEEncoder
    from moee_exp.scoring.evaluate import main_score
    from moee_exp.scoring.weights import AlphaChooser

    emb = {"rw_activation": "logits", "standardize": "none", "standardize_batch_size": 128, "hs_feature": "hs",
           "rw_feature": "rw"}
    base = {"name": "auto", "alpha": 1.0, "sample": 512, "grid": GRID, "dev_fraction": 0.2}
    records = []
    cache_dir = tempfile.mkdtemp(prefix="moee-alpha-criteria-")
    for model in models:
        feat = Memo(Featurizer(model_cfg(model, cache_dir), TEMPLATES[prompt], progress=False))
        encoder = MoEEEncoder(feat, "moee_sum", alpha=1.0, **emb)
        demo, mocks = tasks()
        for task in [*demo, *mocks(encoder)]:
            split = "test" if "test" in task.metadata.eval_splits else task.metadata.eval_splits[0]
            rec = {"model": model, "task": task.metadata.name, "type": task.metadata.type,
                   "source": "demo" if task.metadata.name.startswith("MoEEDemo") else "mteb mock"}
            for a in GRID:
                encoder.fuse_kwargs["alpha"] = a
                rec[f"s{a:g}"] = main_score(encoder, task, split) * 100
            for criterion in ("spread", "calibration"):
                row = AlphaChooser({**base, "criterion": criterion}, emb, encoder, feat,
                                   calibration_key=f"{model}|{prompt}")(task)
                rec[f"alpha_{criterion}"] = row["alpha"]
                rec[f"score_{criterion}"] = main_score(encoder, task, split) * 100
            records.append(rec)
            print(f"{model} {rec['task']}: spread α={rec['alpha_spread']:.3f} calibration α="
                  f"{rec['alpha_calibration']:.3f}", flush=True)
    return pd.DataFrame(records)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    grid = df[[f"s{a:g}" for a in GRID]]
    best, at1 = grid.max(axis=1), df["s1"]
    out = []
    for source, part in [("all", df), *df.groupby("source")]:
        idx = part.index
        for name, score, alpha in [("α = 1 (paper's default)", at1, None), ("auto: spread", df.score_spread,
                                   df.alpha_spread), ("auto: calibration", df.score_calibration, df.alpha_calibration)]:
            out.append({
                "tasks": f"{source} ({len(idx)})", "choice": name,
                "mean regret vs best α on test (x100)": float((best - score)[idx].mean()),
                "tasks >= α=1": f"{int((score[idx] >= at1[idx] - 1e-9).sum())}/{len(idx)}",
                "α min / median / max": "" if alpha is None else
                f"{alpha[idx].min():.2f} / {alpha[idx].median():.2f} / {alpha[idx].max():.2f}",
            })
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny,tiny_qwen2_moe,tiny_mixtral")
    ap.add_argument("--out", type=Path, help="write the per-task table as CSV")
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    df = compare(args.models.split(","))
    if args.out:
        df.to_csv(args.out, index=False)
    from analysis.render import markdown

    print("\n" + markdown(summary(df).round(2)))


if __name__ == "__main__":
    main()
