"""Figures (matplotlib PNGs): MoEE(sum) score vs α, and the prompt-robustness heatmap."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .collect import TASK_TYPES  # noqa: E402
from .tables import _cells, default_pooling, type_scores  # noqa: E402


def alpha_table(rows: pd.DataFrame) -> pd.DataFrame:
    """model, label, prompt, alpha, one column per task type, Avg, n_datasets, best (the α with the highest Avg
    among the most complete), for every MoEE_sum cell run with at least two α values."""
    df = _cells(default_pooling(rows[rows.emb == "moee_sum"]))
    if df.empty:
        return pd.DataFrame()
    scores = type_scores(df)
    wide = scores.pivot_table(index=["model", "label", "prompt", "alpha"], columns="column", values="ours")
    n = df.groupby(["model", "label", "prompt", "alpha"]).task.nunique().rename("n_datasets")
    wide = wide.join(n).reset_index().rename_axis(columns=None)
    wide = wide[wide.groupby(["model", "label", "prompt"]).alpha.transform("nunique") >= 2]
    if wide.empty:
        return wide
    complete = wide.n_datasets == wide.groupby(["model", "label", "prompt"]).n_datasets.transform("max")
    best = wide[complete].sort_values("Avg", ascending=False).drop_duplicates(["model", "label", "prompt"]).index
    wide["best"] = wide.index.isin(best)
    types = [t for t in TASK_TYPES if t in wide] + sorted(set(wide) - set(TASK_TYPES) - {
        "model", "label", "prompt", "alpha", "Avg", "n_datasets", "best"})
    return wide[["model", "label", "prompt", "alpha", *types, "Avg", "n_datasets", "best"]].sort_values(
        ["model", "label", "prompt", "alpha"]).reset_index(drop=True)


def auto_alphas(rows: pd.DataFrame) -> pd.DataFrame:
    """model, label (the grid cell's), prompt, task_type, task, alpha, score of every weights=auto row: where the
    label-free α landed per task (moee_exp.scoring.weights), to mark on the α curves."""
    df = rows[(rows.emb == "moee_sum") & (rows.weights == "auto")]
    if df.empty:
        return pd.DataFrame(columns=["model", "label", "prompt", "task_type", "task", "alpha", "score"])
    df = _cells(default_pooling(df)).assign(alpha=df.alpha)
    df = df.assign(label=df.label.str.replace(" (auto α)", "", regex=False))
    return df[["model", "label", "prompt", "task_type", "task", "alpha", "score"]].reset_index(drop=True)


def plot_alpha(table: pd.DataFrame, model: str, label: str, prompt: str, tasks: str, path: Path,
               auto: pd.DataFrame | None = None) -> Path:
    """Score vs α per task type and Avg, the best α marked; with ``auto`` (auto_alphas), where auto's α landed for
    each task (ticks on the x axis) and the auto job's Avg at the median of those α (a diamond)."""
    sub = table[(table.model == model) & (table.label == label) & (table.prompt == prompt)].sort_values("alpha")
    types = [c for c in sub.columns if c not in ("model", "label", "prompt", "alpha", "Avg", "n_datasets", "best")
             and sub[c].notna().any()]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    colors = plt.get_cmap("tab10")
    for i, t in enumerate(types):
        ax.plot(sub.alpha, sub[t], marker="o", ms=4, lw=1.4, color=colors(i), label=t)
    ax.plot(sub.alpha, sub.Avg, marker="o", ms=6, lw=3, color="black", label="Avg (mean of types)")
    best = sub[sub.best]
    if len(best):
        b = best.iloc[0]
        ax.axvline(b.alpha, color="black", ls=":", lw=1)
        ax.plot([b.alpha], [b.Avg], marker="*", ms=18, color="gold", mec="black", zorder=5, ls="none",
                label=f"best α = {b.alpha:g} (Avg {b.Avg:.2f})")
    if auto is not None:
        a = auto[(auto.model == model) & (auto.label == label) & (auto.prompt == prompt)]
        if len(a):
            ax.plot(a.alpha, [0.02] * len(a), transform=ax.get_xaxis_transform(), marker="|", ms=14, mew=2,
                    color="crimson", ls="none", label="auto α of each task")
            avg = a.groupby("task_type").score.mean().mean()
            med = float(a.alpha.median())
            ax.axvline(med, color="crimson", ls="--", lw=1)
            ax.plot([med], [avg], marker="D", ms=9, color="crimson", mec="black", zorder=5, ls="none",
                    label=f"auto α (median {med:.2f}; Avg {avg:.2f}, α per task)")
    ax.set_xlabel("α  (similarity = cos HS + α · cos RW)")
    ax.set_ylabel("score (x100)")
    ax.set_xticks(sub.alpha.unique())
    ax.set_xlim(min(0, *ax.get_xlim()), max(1.05, ax.get_xlim()[1]))
    ax.grid(alpha=0.3)
    name = "MoEE (sum)" if label == "MoEE_sum" else label.replace("MoEE_sum", "MoEE (sum)")
    ax.set_title(f"{name} score vs α — {model}, prompt: {prompt}\ntasks: {tasks}", fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_prompt_heatmap(result, path: Path) -> Path:
    """The Spearman matrix of every (representation, prompt) pair, HS block then RW block."""
    n = len(result.labels)
    size = max(5.5, 0.42 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), dpi=120)
    im = ax.imshow(result.corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n), result.labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), result.labels, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                v = result.corr[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9 if n <= 8 else 6,
                            color="white" if abs(v) > 0.6 else "black")
    n_hs = sum(lbl.startswith("HS") for lbl in result.labels)
    if 0 < n_hs < n:
        for x in (n_hs - 0.5,):
            ax.axhline(x, color="black", lw=1.5)
            ax.axvline(x, color="black", lw=1.5)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Spearman correlation of pair similarities")
    s = result.summary
    ax.set_title(f"Prompt robustness — {result.model}, {result.task} ({result.n_pairs} pairs)\n"
                 "mean Spearman over different prompts: "
                 f"HS-HS {s['HS-HS']:.2f}, RW-RW {s['RW-RW']:.2f}, RW-HS {s['RW-HS']:.2f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
