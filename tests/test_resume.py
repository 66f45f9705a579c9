"""Resume: a job killed mid-run loses only the dataset in flight; a re-run computes only what is missing or stale."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from jobs import ROOT, cli, wandb_summary
from jobs import compose as hydra_compose

from moee_exp.jobs import resume

TASKS = ["MoEEDemoSTS", "MoEEDemoPairClassification", "MoEEDemoSummarization"]
# protocol=clean: the stall patches mteb.evaluate, which paper's MoEE(sum) scoring does not call
TASK_OVERRIDE = f"tasks.names=[{','.join(TASKS)}]"

# Runs run.py with mteb.evaluate patched so that the second dataset never finishes: a job "in flight" on dataset 2,
# with dataset 1's result on disk. The test then kills it with SIGKILL, like a node failure or `kill -9`.
STALLING_RUN = """
import os, pathlib, runpy, sys, time
import mteb

_evaluate, _calls = mteb.evaluate, []

def evaluate(*args, **kwargs):
    _calls.append(1)
    if len(_calls) == 2:
        pathlib.Path(os.environ["MOEE_TEST_IN_FLIGHT"]).write_text("dataset 2 in flight")
        time.sleep(600)
    return _evaluate(*args, **kwargs)

mteb.evaluate = evaluate
sys.argv = [os.environ["MOEE_TEST_RUN_PY"], *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def rows_of(job: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (job / "results").glob("*.json")}


def test_kill_9_mid_job_then_rerun_recomputes_only_what_was_missing(tmp_cwd):
    """A real process, killed with SIGKILL (nothing of it runs after: no handler, no finally); the re-run in-process."""
    job = tmp_cwd / "job"
    script = tmp_cwd / "stalling_run.py"
    script.write_text(STALLING_RUN)
    in_flight = tmp_cwd / "in_flight"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MOEE_TEST_IN_FLIGHT": str(in_flight),
           "MOEE_TEST_RUN_PY": str(ROOT / "run.py")}
    with open(tmp_cwd / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, str(script), TASK_OVERRIDE, "protocol=clean", "logger=none",
                                 f"hydra.run.dir={job}"], cwd=tmp_cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not in_flight.exists():
            assert proc.poll() is None, f"the job ended before dataset 2: {(tmp_cwd / 'stderr').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "dataset 2 never started"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert set(rows_of(job)) == {TASKS[0]}  # dataset 1 saved; dataset 2 (in flight) and 3 lost
    assert not list((job / "results").glob(".*.tmp"))  # no half-written file
    first = job / "results" / f"{TASKS[0]}.json"
    before, mtime = first.read_bytes(), first.stat().st_mtime_ns
    killed_uid = json.loads(before)["run_uid"]

    rerun = cli(TASK_OVERRIDE, "protocol=clean", "logger=wandb", f"hydra.run.dir={job}", cwd=tmp_cwd)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert f"reusing 1 result(s) already in {job / 'results'}: {TASKS[0]}" in log
    rows = rows_of(job)
    assert set(rows) == set(TASKS)
    assert first.read_bytes() == before and first.stat().st_mtime_ns == mtime  # not recomputed, not rewritten
    new_uids = {rows[t]["run_uid"] for t in TASKS[1:]}
    assert len(new_uids) == 1 and killed_uid not in new_uids  # the missing two were computed by the re-run
    assert all(rows[t]["computed_at"] > rows[TASKS[0]]["computed_at"] for t in TASKS[1:])
    table = (job / "results.csv").read_text().splitlines()
    assert len(table) == 1 + len(TASKS)  # the table holds reused and new rows
    config = wandb_summary(job)["config"]  # the W&B run records what was reused
    assert config["resume.reused_tasks"] == [TASKS[0]]
    assert config["resume.computed_tasks"] == TASKS[1:]


# -------------------------------------------------------------------- the reuse rule, in-process (fast)


def fake_task(name="T", revision="r1"):
    meta = SimpleNamespace(name=name, type="STS", main_score="cosine_spearman", eval_splits=["test"],
                           dataset={"path": f"x/{name}", "revision": revision})
    return SimpleNamespace(metadata=meta)


def compose(*overrides) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(hydra_compose(*overrides), resolve=True)


def save(job: Path, plan: resume.ResumePlan, task) -> dict:
    from moee_exp.jobs.record import write_row

    row = {"task": task.metadata.name, "main_score": 0.5, **plan.stamp(task.metadata.name)}
    write_row(job, row)
    return row


def ident(*overrides):
    from moee_exp.jobs.config import read_job

    return resume.job_identity(read_job(hydra_compose(*overrides), here=False))


def test_a_row_is_reused_only_while_nothing_that_changes_its_score_changed(tmp_path, caplog):
    base = ident()
    a, b = fake_task("A"), fake_task("B")
    first = resume.plan(tmp_path, [a, b], base)
    assert first.todo == [a, b] and not first.reused
    save(tmp_path, first, a)

    again = resume.plan(tmp_path, [a, b], base)
    assert list(again.reused) == ["A"] and again.todo == [b]
    assert resume.plan(tmp_path, [a, b], base, overwrite=True).todo == [a, b]  # overwrite=true recomputes

    # a new data revision of the dataset (mteb's "only-missing" cache would reuse the old score here)
    with caplog.at_level("INFO", logger="moee_exp.jobs.resume"):
        changed = resume.plan(tmp_path, [fake_task("A", revision="r2"), b], base)
    assert not changed.reused and changed.stale == {"A": ["task.dataset.revision"]}
    assert "A: the stored result is stale (changed: task.dataset.revision)" in caplog.text

    # config that changes the score: each makes the row stale; config that does not: reused
    for overrides, field in [
        (["weights.alpha=0.5"], "weights.alpha"),
        (["prompt=none"], "prompt.template"),
        (["prompt.normalize=false"], "prompt.normalize"),
        (["model.max_length=64"], "model.max_length"),
        (["model.dtype=bfloat16"], "model.dtype"),
        (["model.tiny.seed=1"], "model.model"),
        (["cache.dtype=float16"], "features.dtype"),
    ]:
        plan = resume.plan(tmp_path, [a], ident(*overrides))
        assert plan.stale == {"A": [field]}, overrides
    for overrides in (["model.batch_size=3"], ["progress=false"], ["logger=none"], ["model.padding_side=right"],
                      ["weights.criterion=calibration"], ["weights.sample=64"]):  # auto's knobs: unused by fixed
        assert list(resume.plan(tmp_path, [a], ident(*overrides)).reused) == ["A"], overrides

    # new scoring code or a new mteb: stale
    for part, value in (("code", "0" * 16), ("mteb", "0.0.1")):
        other = {**base, "scorer": {**base["scorer"], part: value}}
        assert resume.plan(tmp_path, [a], other).stale == {"A": [f"scorer.{part}"]}


def test_a_row_missing_a_file_this_run_needs_is_computed_again(tmp_path, caplog):
    """E.g. predictions=[STS] now, but the earlier run saved none: the row alone is not enough."""
    a = fake_task("A")
    save(tmp_path, resume.plan(tmp_path, [a], {"k": 1}), a)
    needed = tmp_path / "predictions" / "A_predictions.json"
    with caplog.at_level("INFO", logger="moee_exp.jobs.resume"):
        plan = resume.plan(tmp_path, [a], {"k": 1}, required=lambda task: [needed])
    assert plan.todo == [a] and plan.stale == {"A": ["missing A_predictions.json"]}
    assert "A: the stored result is incomplete (missing A_predictions.json)" in caplog.text
    needed.parent.mkdir()
    needed.write_text("{}")
    assert list(resume.plan(tmp_path, [a], {"k": 1}, required=lambda task: [needed]).reused) == ["A"]


def test_an_unreadable_result_file_is_computed_again(tmp_path, caplog):
    base = {"k": 1}
    a = fake_task("A")
    save(tmp_path, resume.plan(tmp_path, [a], base), a)
    (tmp_path / "results" / "A.json").write_text('{"task": "A", "main_sc')  # e.g. a disk that filled up
    with caplog.at_level("WARNING", logger="moee_exp.jobs.resume"):
        plan = resume.plan(tmp_path, [a], base)
    assert plan.todo == [a] and "unreadable" in caplog.text


def test_the_code_version_covers_the_scoring_modules():
    here = Path(resume.__file__).parents[1]  # moee_exp/
    assert all(list(here.glob(pattern)) for pattern in resume.CODE_FILES)
    assert len(resume.code_version()) == 16


def test_mteb_result_cache_is_never_consulted(monkeypatch):
    """mteb.evaluate gets cache=None: its 'only-missing' strategy would return a stale score for changed data."""
    import mteb

    from moee_exp.scoring import evaluate as ev

    seen = {}

    def fake_evaluate(model, task, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(mteb, "evaluate", fake_evaluate)
    with pytest.raises(RuntimeError, match="stop"):
        next(ev.evaluate_tasks(object(), [fake_task()]))
    assert "cache" in seen and seen["cache"] is None
