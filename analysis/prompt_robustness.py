"""Prompt robustness: how much the similarity a representation gives a sentence pair depends on the prompt.

For each model x STS dataset run with HS and RW under several prompts, the Spearman correlation between the
pairwise similarity scores of every two (representation, prompt) settings, over the same pairs; then the mean
over pairs of different prompts, HS-HS, RW-RW and RW-HS (the paper, DeepSeekMoE-16B on STS12 with 9 prompts: 0.52,
0.63, 0.51). RW-HS under the same prompt is reported apart.

The scores come from mteb's own STS predictions, which every job saves (``<job>/predictions/<task>_predictions.json``,
each pair's cosine similarity, in dataset order; see ``predictions`` in conf/config.yaml). Reading them back needs
neither the model nor a GPU, so the report runs wherever the sweep dir is; recomputing them from features
(moee_exp.features.featurize) would need the model, or its feature cache on the machine that ran the sweep.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from moee_exp.features.prompts import TEMPLATES

from . import paper

PAIRS = ["HS-HS", "RW-RW", "RW-HS"]


def similarities(path: str) -> np.ndarray:
    """Every pair's cosine similarity from an mteb STS predictions file, subsets and splits in sorted order."""
    data = json.loads(open(path, encoding="utf-8").read())
    out = [data[sub][split]["cosine_scores"] for sub in sorted(data) if sub != "mteb_model_meta"
           for split in sorted(data[sub])]
    return np.concatenate([np.asarray(s, dtype=float) for s in out]) if out else np.zeros(0)


@dataclass
class Robustness:
    model: str
    task: str
    labels: list[str]  # "HS · prompt" / "RW · prompt"
    corr: np.ndarray  # Spearman between every two settings
    summary: dict[str, float]
    n_pairs: int


def _summary(corr: np.ndarray, settings: list[tuple[str, str]]) -> dict[str, float]:
    groups = {p: [] for p in [*PAIRS, "RW-HS same prompt"]}
    for i, (ri, pi) in enumerate(settings):
        for j, (rj, pj) in enumerate(settings):
            if i < j and ri == rj:
                groups[f"{ri}-{rj}"].append(corr[i, j])
            elif ri == "RW" and rj == "HS":
                groups["RW-HS" if pi != pj else "RW-HS same prompt"].append(corr[i, j])
    return {k: float(np.nanmean(v)) if v else float("nan") for k, v in groups.items()}


def robustness(rows: pd.DataFrame) -> list[Robustness]:
    """One result per model x STS dataset with at least two prompts for HS or for RW."""
    df = rows[rows.emb.isin(["hs", "rw"]) & (rows.hs_feature == "hs") & (rows.rw_feature == "rw")
              & (rows.task_type == "STS") & rows.predictions.notna()]
    order = {p: i for i, p in enumerate(TEMPLATES)}
    results = []
    for (model, task), sub in df.groupby(["model", "task"]):
        sub = sub.assign(o=sub.prompt.map(lambda p: order.get(p, 99))).sort_values(["emb", "o", "prompt"])
        if sub.groupby("emb").prompt.nunique().max() < 2:
            continue
        settings = [(r.method, r.prompt) for r in sub.itertuples()]
        sims = [similarities(p) for p in sub.predictions]
        if len({len(s) for s in sims}) != 1:
            raise ValueError(f"{model} {task}: the predictions files hold different numbers of pairs")
        with np.errstate(invalid="ignore", divide="ignore"):  # Spearman = Pearson of the ranks
            corr = np.corrcoef(rankdata(np.stack(sims), axis=1))
        labels = [f"{r} · {p}" for r, p in settings]
        results.append(Robustness(model, task, labels, corr, _summary(corr, settings), len(sims[0])))
    return results


def summary_table(results: list[Robustness]) -> pd.DataFrame:
    """model, task, n_settings, pair, ours, paper, diff."""
    recs = [{"model": r.model, "task": r.task, "n_settings": len(r.labels), "n_pairs": r.n_pairs, "pair": k,
             "ours": v} for r in results for k, v in r.summary.items()]
    df = pd.DataFrame(recs, columns=["model", "task", "n_settings", "n_pairs", "pair", "ours"])
    ref = paper.prompt_robustness().rename(columns={"spearman": "paper"})
    df = df.merge(ref, on=["model", "task", "pair"], how="left")
    df["diff"] = df.ours - df.paper
    return df


def matrix_table(result: Robustness) -> pd.DataFrame:
    return pd.DataFrame(result.corr, index=result.labels, columns=result.labels)
