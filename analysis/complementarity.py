"""RW-HS complementarity: do HS and RW group the same texts together?

The clusterings compared are mteb's own: for a Clustering dataset, the HS job and the RW job (same model and
prompt) each run mteb's k-means on the same texts and save every text's cluster id
(``<job>/predictions/<task>_predictions.json``). For each clustering set of the dataset:

- AMI, NMI: sklearn's adjusted / normalized mutual information between the two assignments;
- Jaccard: pair-counting Jaccard index, pairs of texts put together by both / pairs put together by either;
- exact match: % of texts in the same cluster under the best one-to-one matching of HS clusters to RW clusters
  (Hungarian algorithm on the contingency table).
The paper (DeepSeekMoE-16B) reports AMI 0.29, NMI 0.29, Jaccard 0.06, exact match 45.54% without defining the last
two; these are our definitions. A dataset's numbers are the means over its sets, weighted by set size.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from . import paper

METRICS = ["AMI", "NMI", "Jaccard", "exact_match_pct"]


def assignments(path: str) -> dict[str, list]:
    """Every list of cluster ids in an mteb clustering predictions file, keyed by where it sits."""
    found = {}

    def walk(node, key):
        if isinstance(node, list) and node and all(isinstance(x, (int, str)) for x in node):
            found[key] = node
        elif isinstance(node, list):
            for i, x in enumerate(node):
                walk(x, f"{key}/{i}")
        elif isinstance(node, dict):
            for k in sorted(node):
                if k != "mteb_model_meta":
                    walk(node[k], f"{key}/{k}")

    walk(json.loads(open(path, encoding="utf-8").read()), "")
    return found


def _pairs(counts: np.ndarray) -> float:
    """Pairs of texts within groups of these sizes."""
    return float((counts * (counts - 1) / 2).sum())


def agreement(a, b) -> dict[str, float]:
    c = contingency_matrix(a, b)
    both, in_a, in_b = _pairs(c), _pairs(c.sum(axis=1)), _pairs(c.sum(axis=0))
    rows, cols = linear_sum_assignment(-c)
    return {
        "AMI": adjusted_mutual_info_score(a, b),
        "NMI": normalized_mutual_info_score(a, b),
        "Jaccard": both / (in_a + in_b - both) if in_a + in_b - both > 0 else float("nan"),
        "exact_match_pct": 100 * c[rows, cols].sum() / len(a),
    }


def complementarity(rows: pd.DataFrame) -> pd.DataFrame:
    """model, prompt, task, n_texts, AMI, NMI, Jaccard, exact_match_pct: one row per dataset run with HS and RW."""
    df = rows[rows.emb.isin(["hs", "rw"]) & (rows.hs_feature == "hs") & (rows.rw_feature == "rw")
              & (rows.task_type == "Clustering") & rows.predictions.notna()]
    recs = []
    for (model, prompt, task), sub in df.groupby(["model", "prompt", "task"]):
        paths = dict(zip(sub.emb, sub.predictions))
        if set(paths) != {"hs", "rw"}:
            continue
        hs, rw = assignments(paths["hs"]), assignments(paths["rw"])
        sets = [(hs[k], rw[k]) for k in hs if k in rw and len(hs[k]) == len(rw[k])]
        if not sets:
            continue
        n = np.array([len(a) for a, _ in sets], dtype=float)
        scores = pd.DataFrame([agreement(a, b) for a, b in sets])
        recs.append({"model": model, "prompt": prompt, "task": task, "n_texts": int(n.sum()),
                     **{m: float(np.average(scores[m], weights=n)) for m in METRICS}})
    return pd.DataFrame(recs, columns=["model", "prompt", "task", "n_texts", *METRICS])


def with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over datasets per model x prompt, long: model, prompt, metric, ours, paper, diff."""
    if table.empty:
        return pd.DataFrame(columns=["model", "prompt", "metric", "ours", "paper", "diff"])
    mean = table.groupby(["model", "prompt"])[METRICS].mean().reset_index()
    long = mean.melt(id_vars=["model", "prompt"], var_name="metric", value_name="ours")
    long = long.merge(paper.complementarity().rename(columns={"value": "paper"}), on=["model", "metric"], how="left")
    long["diff"] = long.ours - long.paper
    long["o"] = long.metric.map(METRICS.index)
    return long.sort_values(["model", "prompt", "o"]).drop(columns="o").reset_index(drop=True)
