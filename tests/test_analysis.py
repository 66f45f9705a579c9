"""analysis/: a small real sweep of every experiment (tiny model, demo tasks, through run.py), then every table and
figure, checked against the raw result files the jobs wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from jobs import cli
from scipy.stats import spearmanr
from sklearn.metrics import adjusted_mutual_info_score

from analysis import collect as col
from analysis import complementarity, report, tables
from analysis import prompt_robustness as pr

# one xdist worker runs this module: its session-scoped fixture is built once, not once per worker
pytestmark = pytest.mark.xdist_group("test_analysis")

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["Clustering", "PairClassification", "Reranking", "STS", "Summarization"]


# The demo tasks but classification (10 logistic regressions per job: the slow one on 2 CPU cores).
TASKS = "tasks.names=[MoEEDemoSTS,MoEEDemoClustering,MoEEDemoPairClassification,MoEEDemoReranking,MoEEDemoSummarization]"
SWEEPS = {  # 25 tiny jobs: each experiment's grid, cut down by overrides as a user would
    "main": ("paper_main", TASKS),  # 4 emb x 2 prompts
    "ablation": ("paper_ablation", "tasks.names=[MoEEDemoSTS]"),  # 6 poolings + 2 MoEE
    "alpha": ("alpha", TASKS, "prompt=prompteol", "weights.alpha=0.2,0.6,1.0"),
    "prompts": ("prompts", "tasks.names=[MoEEDemoSTS]", "prompt=prompteol,style,tone"),  # x {hs, rw}
}


def run_sweep(tmp: Path, name: str) -> int:
    experiment, *overrides = SWEEPS[name]
    proc = cli(f"+experiment={experiment}", "model=tiny", "logger=none", "progress=false",
               f"hydra.sweep.dir={tmp / name}", *overrides, "-m", cwd=tmp)
    (tmp / f"{name}.log").write_text(proc.stdout + proc.stderr)
    return proc.returncode


@pytest.fixture(scope="session")  # (module scope: built again when xdist interleaves another module)
def sweeps(tmp_path_factory):
    """The four sweeps through run.py (in-process, tests/jobs.py), one after the other. They share the tiny model and
    this test session's feature cache (MOEE_CACHE_DIR)."""
    tmp = tmp_path_factory.mktemp("sweeps")
    codes = {name: run_sweep(tmp, name) for name in SWEEPS}
    for name, code in codes.items():
        assert code == 0, (tmp / f"{name}.log").read_text()[-4000:]
    return {name: tmp / name for name in SWEEPS}


@pytest.fixture(scope="session")  # (module scope: built again when xdist interleaves another module)
def built(sweeps, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert report.main([*map(str, sweeps.values()), "--out", str(out)]) == 0
    return out


def raw_rows(sweep_dir: Path, **match) -> list[dict]:
    """Rows straight from the jobs' results/<task>.json, for the jobs whose config matches."""
    rows = []
    for path in sweep_dir.glob("*/results/*.json"):
        row = json.loads(path.read_text())
        if all(row[k] == v for k, v in match.items()):
            rows.append(row)
    return rows


def job_dir(sweep_dir: Path, **match) -> Path:
    (job,) = {p.parent.parent for p in sweep_dir.glob("*/results/*.json")
              if all(json.loads(p.read_text())[k] == v for k, v in match.items())}
    return job


def type_avg(rows: list[dict]) -> tuple[dict, float]:
    by_type = {t: np.mean([r["main_score"] * 100 for r in rows if r["task_type"] == t]) for t in TYPES}
    return by_type, float(np.mean(list(by_type.values())))


def test_every_experiment_ran_its_grid(sweeps):
    jobs = {name: sorted(p.parent for p in d.glob("*/config.yaml")) for name, d in sweeps.items()}
    assert {k: len(v) for k, v in jobs.items()} == {"main": 8, "alpha": 3, "ablation": 8, "prompts": 6}
    embs = {json.loads(p.read_text())["emb"] for p in sweeps["ablation"].glob("*/results/*.json")}
    feats = {(r["hs_feature"], r["rw_feature"]) for r in raw_rows(sweeps["ablation"])}
    assert embs == {"hs", "rw", "moee_concat", "moee_sum"} and len(feats) == 5


def test_main_table_cell_recomputed_from_raw_rows(sweeps, built):
    long = pd.read_csv(built / "main_table.csv")
    ours = long[(long.method == "HS") & (long.prompt == "prompteol")].set_index("column").ours
    by_type, avg = type_avg(raw_rows(sweeps["main"], emb="hs", prompt="prompteol"))
    assert ours["STS"] == pytest.approx(by_type["STS"]) and ours["Avg"] == pytest.approx(avg)
    # MoEE_sum is shown at the alpha with the best Avg, over the main sweep (alpha=1) and the alpha sweep
    rows = raw_rows(sweeps["main"], emb="moee_sum", prompt="prompteol") + raw_rows(sweeps["alpha"])
    best = max({r["alpha"] for r in rows}, key=lambda a: type_avg([r for r in rows if r["alpha"] == a])[1])
    cell = long[(long.method == "MoEE_sum") & (long.prompt == "prompteol") & (long.column == "Avg")].iloc[0]
    assert cell.alpha == best and cell.ours == pytest.approx(type_avg([r for r in rows if r["alpha"] == best])[1])
    md = (built / "main_table.md").read_text()
    assert "STS (prompteol)" in md and "Avg (none)" in md and "| tiny-olmoe | MoEE_concat [paper protocol] | ours |" in md
    tex = (built / "main_table.tex").read_text()
    assert r"\multicolumn{7}{c}{none}" in tex and r"\begin{tabular}" in tex
    per = pd.read_csv(built / "per_dataset.csv")
    raw = raw_rows(sweeps["main"], emb="rw", prompt="none", task="MoEEDemoClustering")[0]
    assert per[(per.method == "RW") & (per.prompt == "none") & (per.task == "MoEEDemoClustering")].score.item() \
        == pytest.approx(raw["main_score"] * 100)


def test_paper_numbers_join_by_model_method_prompt(sweeps):
    rows = col.collect([sweeps["main"]]).rows
    rows = rows.assign(model="olmoe-1b-7b")  # our real rows under a model name the paper reports
    long = tables.main_long(rows).set_index(["method", "prompt", "column"])
    ref = pd.read_csv(ROOT / "analysis/data/paper_results.csv")
    for method, prompt, column in [("HS", "prompteol", "STS"), ("RW", "none", "Clustering"),
                                   ("MoEE_sum", "prompteol", "Avg"), ("MoEE_concat", "none", "Summarization")]:
        paper = ref[(ref.model == "olmoe-1b-7b") & (ref.method == method) & (ref.prompt == prompt)][column].item()
        cell = long.loc[(method, prompt, column)]
        assert cell.paper == paper and cell["diff"] == pytest.approx(cell.ours - paper)
    assert long.loc[("HS", "prompteol", "STS")].paper == 72.91  # Table 4, OLMoE HS + PromptEOL, STS
    wide = tables.main_wide(tables.main_long(rows))
    assert list(wide[("", "")][:3]) == ["ours", tables.REPORTED, "Δ"]
    assert tables.main_long(col.collect([sweeps["main"]]).rows).paper.isna().all()  # tiny-olmoe: not in the paper


def test_ablation_table(sweeps, built):
    abl = pd.read_csv(built / "ablation.csv")
    assert list(abl.variant) == ["hs", "hs_mean_layers", "hs_mean_tokens", "hs_mean_tokens_layers", "rw",
                                 "rw_mean_tokens", "moee_best"]
    raw = raw_rows(sweeps["ablation"], emb="hs", hs_feature="hs_mean_tokens")[0]
    assert abl.set_index("variant").loc["hs_mean_tokens", "mean"] == pytest.approx(raw["main_score"] * 100)
    moee = [r for d in sweeps.values() for r in raw_rows(d, prompt="prompteol", task="MoEEDemoSTS")
            if r["emb"].startswith("moee") and r["hs_feature"] == "hs"]
    assert abl.set_index("variant").loc["moee_best", "mean"] == pytest.approx(max(r["main_score"] for r in moee) * 100)
    assert "MoEE (best: " in (built / "ablation.md").read_text()
    # Table 5's numbers join by model and prompt (the paper: DeepSeekMoE-16B, PromptEOL)
    t = tables.ablation(col.collect([sweeps["ablation"]]).rows.assign(model="deepseek-moe-16b")).set_index("variant")
    assert t.loc["hs", "paper"] == 60.40 and t.loc["moee_best", "paper"] == 71.75
    assert t.loc["rw_mean_tokens", "diff"] == pytest.approx(t.loc["rw_mean_tokens", "mean"] - 46.03)


def test_prompt_robustness(sweeps, built):
    summary = pd.read_csv(built / "prompt_robustness.csv").set_index("pair")
    assert set(summary.index) >= {"HS-HS", "RW-RW", "RW-HS"} and summary.ours.between(-1, 1).all()
    matrix = pd.read_csv(built / "prompt_robustness_tiny-olmoe_MoEEDemoSTS.csv", index_col=0)
    assert len(matrix) == 8  # HS and RW x {none, prompteol, style, tone}
    assert np.allclose(np.diag(matrix.values), 1)

    def sims(directory, emb, prompt):
        path = job_dir(directory, emb=emb, prompt=prompt) / "predictions/MoEEDemoSTS_predictions.json"
        return json.loads(path.read_text())["default"]["test"]["cosine_scores"]  # mteb's per-pair cosine

    rho = spearmanr(sims(sweeps["prompts"], "rw", "style"), sims(sweeps["prompts"], "hs", "tone")).statistic
    assert matrix.loc["RW · style", "HS · tone"] == pytest.approx(rho)
    hs = [f"HS · {p}" for p in ["none", "prompteol", "style", "tone"]]
    pairs = [matrix.loc[a, b] for i, a in enumerate(hs) for b in hs[i + 1:]]
    assert summary.loc["HS-HS", "ours"] == pytest.approx(np.mean(pairs))
    rows = col.collect([sweeps["prompts"]]).rows.assign(model="deepseek-moe-16b", task="STS12")
    joined = pr.summary_table(pr.robustness(rows)).set_index("pair")
    assert list(joined.loc[["HS-HS", "RW-RW", "RW-HS"], "paper"]) == [0.52, 0.63, 0.51]


def test_complementarity(sweeps, built):
    table = pd.read_csv(built / "complementarity_per_dataset.csv")
    assert set(table.prompt) == {"none", "prompteol"} and (table.task == "MoEEDemoClustering").all()
    assert table.AMI.between(-1, 1).all() and table.exact_match_pct.between(0, 100).all()

    def labels(emb):
        path = job_dir(sweeps["main"], emb=emb, prompt="none") / "predictions/MoEEDemoClustering_predictions.json"
        return json.loads(path.read_text())["default"]["test"][0]  # mteb's cluster id of each text

    hs, rw = labels("hs"), labels("rw")
    row = table[table.prompt == "none"].iloc[0]
    assert row.AMI == pytest.approx(adjusted_mutual_info_score(hs, rw)) and row.n_texts == len(hs)
    joined = complementarity.with_paper(table.assign(model="deepseek-moe-16b")).set_index(["prompt", "metric"])
    assert joined.loc[("none", "exact_match_pct"), "paper"] == 45.54
    same = complementarity.agreement(hs, hs)
    assert same["Jaccard"] == pytest.approx(1) and same["exact_match_pct"] == pytest.approx(100)


def test_figures_are_real_pictures(built):
    pngs = sorted(built.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"alpha_tiny-olmoe_prompteol.png", "prompt_robustness_tiny-olmoe_MoEEDemoSTS.png"} <= names
    for png in pngs:
        img = mpimg.imread(png)
        assert png.stat().st_size > 20_000 and img.shape[0] > 400 and img.shape[1] > 600
        assert img[..., :3].std() > 0.05  # not blank
    alpha = pd.read_csv(built / "alpha.csv")
    assert alpha.best.sum() == 1 and sorted(alpha.alpha) == [0.2, 0.6, 1.0]


def test_collect_reports_incomplete_jobs_and_resolves_reruns(sweeps, tmp_path):
    broken = tmp_path / "sweep"
    shutil.copytree(job_dir(sweeps["main"], emb="hs", prompt="none"), broken / "0")
    (broken / "0/results/MoEEDemoReranking.json").unlink()  # a job killed before its 5th dataset
    for path in (broken / "0/results").glob("*.json"):  # ... of a re-run, after the sweep
        path.write_text(json.dumps({**json.loads(path.read_text()), "computed_at": "2999-01-01T00:00:00+00:00"}))
    (broken / "1/.hydra").mkdir(parents=True)  # a job that failed before writing its config
    c = col.collect([broken])
    assert len(c.incomplete) == 2 and c.n_jobs == 2
    first = c.incomplete.set_index("job_dir").loc[str(broken / "0")]
    assert first.missing == "MoEEDemoReranking" and "hs" in first.job
    assert len(c.rows) == 4  # its finished datasets are kept
    # the same cells run again: one row each, the latest
    both = col.collect([sweeps["main"], broken])
    assert both.n_duplicates == 4 and len(both.rows) == 40
    assert (both.rows.job_dir == str(broken / "0")).sum() == 4
    out = tmp_path / "rep"
    assert report.main([str(broken), "--out", str(out)]) == 0
    assert "## Incomplete jobs (2)" in (out / "README.md").read_text()


def test_wandb_source_fails_clearly_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert report.main(["--wandb", "someone/moee", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "W&B" in err and "online" in err
