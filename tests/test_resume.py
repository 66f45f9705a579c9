"""Resume: a job killed mid-run loses only the dataset in flight; a re-run computes only what is missing or stale."""

import fcntl
import json
import os
import signal
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from jobs import cli, compose, error_lines, job_in_process, output, run_py, stalling_env, start, wandb_summary

from moee_exp.jobs import resume

TASKS = ["MoEEDemoSTS", "MoEEDemoPairClassification", "MoEEDemoSummarization"]
# protocol=clean: the stall patches mteb.evaluate, which paper's MoEE(sum) scoring does not call
TASK_OVERRIDE = f"tasks.names=[{','.join(TASKS)}]"


def rows_of(job: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (job / "results").glob("*.json")}


def test_a_job_in_flight_holds_its_dir_and_after_kill_9_the_rerun_computes_only_what_was_missing(tmp_path):
    """One real `python run.py`, stalled in dataset 2 with dataset 1's row on disk (tests/jobs.py: stalling_env).
    A second job into its dir is refused with one line naming it, and writes nothing. Killed with SIGKILL, like a
    node failure (nothing of it runs after: no handler, no finally; its lock file stays), it has lost only the
    dataset in flight. The rerun (the command, in-process) takes the dir over, keeps dataset 1's file as it was and
    computes the other two; a lock whose flock outlived its holder's pid blocks nothing either."""
    env, in_flight = stalling_env(tmp_path, {**os.environ, "PYTHONUNBUFFERED": "1"})
    job = tmp_path / "job"
    common = [TASK_OVERRIDE, "protocol=clean", "progress=false", f"cache.dir={tmp_path / 'features'}"]
    holder = start(run_py(*common, "logger=none", f"hydra.run.dir={job}"), cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 300
        while not in_flight.exists() or not in_flight.read_text():
            assert holder.poll() is None, f"the job ended before dataset 2: {output(holder)[1][-3000:]}"
            assert time.monotonic() < deadline, "dataset 2 never started"
            time.sleep(0.2)
        before = {p.name: p.read_bytes() for p in (job / "results").iterdir()}
        code, err = job_in_process(job, *common, "logger=none")
        assert code == 2, err[-3000:]
        (line,) = error_lines(err)
        assert f"{job} is in use by another job ({socket.gethostname()} pid {holder.pid}, started " in line, line
        assert "run into another dir (hydra.run.dir=...)" in line
        assert {p.name: p.read_bytes() for p in (job / "results").iterdir()} == before  # nothing written
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    assert set(rows_of(job)) == {TASKS[0]}  # dataset 1 saved; dataset 2 (in flight) and 3 lost
    assert not list((job / "results").glob(".*.tmp"))  # no half-written file
    assert (job / ".job.lock").exists()  # left behind by the killed holder
    first = job / "results" / f"{TASKS[0]}.json"
    before, mtime = first.read_bytes(), first.stat().st_mtime_ns
    killed_uid = json.loads(before)["run_uid"]

    rerun = cli(*common, "logger=wandb", f"hydra.run.dir={job}", cwd=tmp_path)
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

    dead = int(Path("/proc/sys/kernel/pid_max").read_text())  # a pid no process on this host has (pids are below it)
    with open(job / ".job.lock", "r+b") as f:  # a flock that outlived its holder (an inherited descriptor, NFS)
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        f.truncate()
        f.write(json.dumps({"host": socket.gethostname(), "pid": dead, "since": "then"}).encode())
        f.flush()
        code, err = job_in_process(job, *common, "logger=none")
    assert code == 0, err[-3000:]


# -------------------------------------------------------------------- the reuse rule, in-process (fast)


def fake_task(name="T", revision="r1"):
    meta = SimpleNamespace(name=name, type="STS", main_score="cosine_spearman", eval_splits=["test"],
                           dataset={"path": f"x/{name}", "revision": revision})
    return SimpleNamespace(metadata=meta)


def save(job: Path, plan: resume.ResumePlan, task) -> dict:
    from moee_exp.jobs.record import write_row

    row = {"task": task.metadata.name, "main_score": 0.5, **plan.stamp(task.metadata.name)}
    write_row(job, row)
    return row


def ident(*overrides):
    from moee_exp.jobs.config import read_job

    return resume.job_identity(read_job(compose(*overrides), here=False))


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
