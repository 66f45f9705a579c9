"""The paper's numbers (analysis/data/, sources in its README.md), x100 like the paper's tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DATA = Path(__file__).parent / "data"


def main_results() -> pd.DataFrame:
    """Tables 3-4, long: model, method, prompt, column (a task type or Avg), paper."""
    wide = pd.read_csv(DATA / "paper_results.csv")
    return wide.melt(id_vars=["model", "method", "prompt"], var_name="column", value_name="paper")


def ablation() -> pd.DataFrame:
    """Table 5: model, prompt, tasks, variant, score (mean of STS12-16)."""
    return pd.read_csv(DATA / "paper_ablation.csv")


def prompt_robustness() -> pd.DataFrame:
    """model, task, pair (HS-HS, RW-RW, RW-HS), spearman."""
    return pd.read_csv(DATA / "paper_prompt_robustness.csv")


def complementarity() -> pd.DataFrame:
    """model, metric (AMI, NMI, Jaccard, exact_match_pct), value."""
    return pd.read_csv(DATA / "paper_complementarity.csv")
