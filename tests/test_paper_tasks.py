"""Dress rehearsal of the paper's run, offline: the REAL mteb task classes of all 19 paper datasets (their splits,
subsets, evaluators and main scores) through run.py, our encoder and the report, with only their data replaced by
synthetic data of each task's schema (tasks.data=synthetic, moee_exp/scoring/synthetic_tasks.py) and the tiny model.

Every experiment config runs as a user would type it, one Hydra multirun each (in-process: tests/jobs.py), cut down
by overrides."""

from __future__ import annotations

import json
from pathlib import Path

import mteb
import pandas as pd
import pytest
import yaml
from jobs import cli

from analysis import report
from moee_exp.scoring.paper_scoring import MAIN_SCORES

# one xdist worker runs this module: its session-scoped fixture is built once, not once per worker
pytestmark = pytest.mark.xdist_group("test_paper_tasks")

ROOT = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((ROOT / "conf/tasks/paper.yaml").read_text())["names"]
DRY = ("model=tiny", "tasks.data=synthetic", "logger=none", "progress=false")
SWEEPS = {  # experiment + the overrides that cut it down to seconds
    "paper_main": ("prompt=prompteol", "emb=hs,moee_sum"),  # 2 jobs x the 19 paper datasets
    "alpha": ("prompt=prompteol", "weights.alpha=0.5"),  # 1 job x 19 (alpha=1 comes from paper_main)
    "paper_ablation": (),  # 8 poolings / kinds x STS12-16
    "prompts": ("prompt=prompteol,style",),  # {hs, rw} x 2 prompts x STS12
}
EXPECTED_JOBS = {"paper_main": 2, "alpha": 1, "paper_ablation": 8, "prompts": 4}
# One key of each evaluator's own output besides the main score: proof that the type's real evaluator ran.
EVALUATOR_KEYS = {
    "Classification": "scores_per_experiment",
    "Clustering": "v_measures",
    "PairClassification": "cosine_ap",
    "Reranking": "ndcg_at_10",
    "STS": "pearson",
    "Summarization": "cosine_pearson",
}


def run_sweep(tmp: Path, name: str) -> int:
    proc = cli(f"+experiment={name}", *DRY, *SWEEPS[name], f"hydra.sweep.dir={tmp / name}", "-m", cwd=tmp)
    (tmp / f"{name}.log").write_text(proc.stdout + proc.stderr)
    return proc.returncode


@pytest.fixture(scope="session")  # (module scope: built again when xdist interleaves another module)
def sweeps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rehearsal")
    codes = {name: run_sweep(tmp, name) for name in SWEEPS}  # in-process (tests/jobs.py), one after the other
    for name, code in codes.items():
        assert code == 0, (tmp / f"{name}.log").read_text()[-4000:]
    return {name: tmp / name for name in SWEEPS}


def rows_of(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results/*.json"))]


def test_every_experiment_composes_and_runs_its_grid_on_the_real_task_classes(sweeps):
    jobs = {name: len(list(d.glob("*/config.yaml"))) for name, d in sweeps.items()}
    assert jobs == EXPECTED_JOBS
    tasks = {name: {r["task"] for r in rows_of(d)} for name, d in sweeps.items()}
    assert tasks["paper_main"] == tasks["alpha"] == set(PAPER)
    assert tasks["paper_ablation"] == {"STS12", "STS13", "STS14", "STS15", "STS16"}
    assert tasks["prompts"] == {"STS12"}
    for d in sweeps.values():
        for job in d.glob("*/"):
            if (job / "results").exists():
                assert len(list((job / "results").glob("*.json"))) == len({r["task"] for r in rows_of(d)})


def test_every_row_has_the_task_s_real_main_score_split_and_evaluator(sweeps):
    rows = [r for d in sweeps.values() for r in rows_of(d)]
    for row in rows:
        meta = mteb.get_task(row["task"]).metadata  # mteb's own metadata, not ours
        if row["emb"] == "moee_sum" and row.get("sum_scoring") == "paper":  # the public code's scoring, its names
            (scores,) = row["scores"]
            assert row["main_score_name"] == MAIN_SCORES[meta.type] and row["task_type"] == meta.type
            assert scores["main_score"] == pytest.approx(row["main_score"]) == pytest.approx(scores[row["main_score_name"]])
            continue
        assert row["task_type"] == meta.type and row["main_score_name"] == meta.main_score
        assert row["split"] in meta.eval_splits and row["task_data"] == "synthetic"
        (scores,) = row["scores"]  # one hf_subset ("default") for each of the 19
        assert scores["hf_subset"] in mteb.get_task(row["task"]).hf_subsets
        assert scores["main_score"] == pytest.approx(row["main_score"]) == pytest.approx(scores[meta.main_score])
        assert EVALUATOR_KEYS[meta.type] in scores, (row["task"], sorted(scores))
        assert 0 <= row["main_score"] <= 1
    assert {r["task_type"] for r in rows} == set(EVALUATOR_KEYS)


def test_the_report_builds_the_main_table_with_all_19_datasets(sweeps, tmp_path):
    out = tmp_path / "report"  # Tables 3-4 come from the paper_main and alpha sweeps (README: Analysis)
    assert report.main([str(sweeps["paper_main"]), str(sweeps["alpha"]), "--out", str(out)]) == 0
    per = pd.read_csv(out / "per_dataset.csv")
    for (method, prompt), cell in per[per.prompt == "prompteol"].groupby(["method", "prompt"]):
        if method in ("HS", "MoEE_sum"):
            assert set(cell.task) == set(PAPER), method
    main = (out / "main_table.md").read_text()
    assert "| tiny-olmoe | HS [paper protocol, synthetic] | ours |" in main
    assert "| tiny-olmoe | MoEE_sum [paper protocol, synthetic] (best α on test) | ours |" in main
    cells = [line for line in main.splitlines() if line.startswith("| tiny-olmoe")]
    assert cells and not any("†" in line for line in cells)  # every cell averages every dataset of its column
    long = pd.read_csv(out / "main_table.csv")
    hs = long[(long.method == "HS") & (long.prompt == "prompteol")].set_index("column").ours
    raw = pd.DataFrame([r for r in rows_of(sweeps["paper_main"]) if r["emb"] == "hs"])
    by_type = raw.groupby("task_type").main_score.mean() * 100  # the paper's Avg: mean of the type means
    assert hs["Avg"] == pytest.approx(by_type.mean())
    alpha = long[(long.method == "MoEE_sum") & (long.column == "Avg")].alpha.item()
    assert alpha in (0.5, 1.0)  # the best of the alpha sweep's 0.5 and paper_main's 1.0


def test_the_report_builds_every_table_from_all_four_experiments(sweeps, tmp_path):
    out = tmp_path / "report"
    assert report.main([*map(str, sweeps.values()), "--out", str(out)]) == 0
    abl = pd.read_csv(out / "ablation.csv")
    assert {"hs_mean_tokens", "rw_mean_tokens", "moee_best"} <= set(abl.variant) and abl["mean"].notna().all()
    robust = pd.read_csv(out / "prompt_robustness.csv")
    assert len(robust) and robust["ours"].notna().all()
