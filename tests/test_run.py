"""run.py end to end: the default job as a real `python run.py` process (the command a user types first); an alpha
sweep read back from disk and W&B, and bad input, in-process (tests/jobs.py)."""

import json
import os
from pathlib import Path

import pytest
from jobs import cli, job_dirs, process, run_py, wandb_records, wandb_summary

FAST_TASKS = "tasks.names=[MoEEDemoSTS,MoEEDemoClassification]"


def wandb_group(job_dir: Path) -> str:
    (run_record,) = [r["run"] for r in wandb_records(job_dir) if r.get("type") == "run"]
    return run_record["run_group"]


def test_default_job(tmp_cwd):
    proc = process(run_py(), cwd=tmp_cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Avg (mean of task types)" in proc.stdout
    # the header says what these numbers are: a random model on the bundled hand-written tasks
    assert "(demo tasks, bundled demo data: hand-written, a few rows each; a tiny random model: scores mean nothing;" \
        in proc.stdout
    (job,) = job_dirs(tmp_cwd / "outputs")
    rows = [json.loads(p.read_text()) for p in (job / "results").glob("*.json")]
    assert {r["task_type"] for r in rows} == {
        "STS", "Classification", "Clustering", "PairClassification", "Reranking", "Summarization"}
    assert all(r["emb"] == "moee_sum" and r["alpha"] == 1.0 and r["prompt"] == "prompteol" for r in rows)
    assert all(0 <= r["main_score"] <= 1 and r["scores"] for r in rows)
    # every library that can move a score is on record, in the row and in the W&B config (the locked versions)
    from moee_exp.features.identity import SCORE_LIBRARIES, library_versions

    versions = library_versions()
    assert set(versions) == set(SCORE_LIBRARIES) and all(versions.values())  # the lock installs every one of them
    assert all(r["identity"]["versions"] == versions for r in rows)
    logged = wandb_summary(job)
    assert {k: logged["config"][f"versions.{k}"] for k in versions} == versions
    assert logged["state"] == "finished"
    assert logged["summary"]["avg"] == pytest.approx(
        sum({r["task_type"]: r["main_score"] * 100 for r in rows}.values()) / 6)


def test_alpha_sweep_writes_one_result_and_one_wandb_run_per_alpha(tmp_cwd):
    proc = cli("-m", "emb=moee_sum", "weights.alpha=0.2,0.7", FAST_TASKS, cwd=tmp_cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(tmp_cwd / "multirun")
    assert len(jobs) == 2
    groups, alphas = set(), []
    for job in jobs:
        rows = {r["task"]: r for r in map(json.loads, map(Path.read_text, (job / "results").glob("*.json")))}
        assert set(rows) == {"MoEEDemoSTS", "MoEEDemoClassification"}
        logged = wandb_summary(job)
        alpha = logged["config"]["weights.alpha"]
        assert {r["alpha"] for r in rows.values()} == {alpha}
        for task, row in rows.items():
            assert logged["summary"][f"{row['task_type']}/{task}"] == pytest.approx(row["main_score"] * 100)
            assert f"score/{task}" not in logged["summary"]  # each score once, under one naming scheme
        alphas.append(alpha)
        groups.add(wandb_group(job))
    assert sorted(alphas) == [0.2, 0.7]
    (group,) = groups  # runs of one sweep share a W&B group
    assert group.startswith("multirun_")
    # different alpha -> different STS score (the alpha really reaches the fusion)
    sts = {json.loads((j / "results/MoEEDemoSTS.json").read_text())["main_score"] for j in jobs}
    assert len(sts) == 2


def test_sweep_with_group_default_alphas_is_ten_jobs(tmp_cwd):
    """The moee_sum file carries the paper's alpha grid; --cfg shows it without running anything."""
    proc = cli("emb=moee_sum", "--cfg", "hydra", "-p", "hydra.sweeper.params", cwd=tmp_cwd)
    assert proc.returncode == 0, proc.stderr
    assert "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0" in proc.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["emb=foo"], "Could not find 'emb/foo'"),
        (["weights.alpha=-0.5"], "weights.alpha=-0.5 must be >= 0"),
        (["emb.alpha=0.3"], "emb.alpha is now weights.alpha"),
        (["weights=auto", "weights.criterion=best"], "weights.criterion='best' is not one of"),
        (["tasks.names=[STS1]"], "unknown task(s): 'STS1' not found. Did you mean"),
        (["model.dtype=int3"], "model.dtype='int3' is not one of"),
        (["model.batch_size=abc"], "model.batch_size"),
        (["prompt.template=no placeholder"], "must contain '{text}'"),
    ],
)
def test_bad_config_gives_a_clear_error(tmp_cwd, overrides, message):
    proc = cli(*overrides, "logger=none", cwd=tmp_cwd)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dense_model_gives_one_line_error(tmp_cwd):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=4, num_key_value_heads=4)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_cwd / "dense")
    proc = cli("model=olmoe", "model.name_or_path=./dense", "logger=none", cwd=tmp_cwd)
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "dense model with no MoE routers" in error_lines[0]


@pytest.mark.parametrize(("sweep", "n_jobs"), [("prompt=none,prompteol", 2), ("emb=hs,moee_sum", 2)])
def test_a_sweep_over_other_groups_runs_one_job_per_value(tmp_cwd, sweep, n_jobs):
    """The default emb carries no alpha sweep, so it does not multiply other sweeps by ten."""
    proc = cli("-m", sweep, "tasks.names=[MoEEDemoSTS]", "logger=none", "progress=false", cwd=tmp_cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(job_dirs(tmp_cwd / "multirun")) == n_jobs
