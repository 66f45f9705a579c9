"""Issue 30: results that cannot be mixed or lost, and stops that keep them.

Default job dirs that never collide (one writer per job dir: tests/test_resume.py), the data source and the
evaluated subsets in a row's identity, duplicate task names computed once, a row without a number recomputed, a hung
extraction-lock holder taken over, SIGTERM stopping a joblib sweep's workers, Ctrl-C a clean stop, a cache subdir that
is a file and a read-only MOEE_CACHE_DIR that holds everything. Jobs run in this process (run.job, as `python run.py`
runs them) except where a process is what is tested: two commands' default dirs, a hung lock holder, a joblib sweep and
a signal to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from jobs import error_lines, job_in_process, stalling_env, unprivileged

TASKS3 = ["MoEEDemoSTS", "MoEEDemoPairClassification", "MoEEDemoSummarization"]
TWO = "tasks.names=[MoEEDemoSTS,MoEEDemoPairClassification]"


def _env(**extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **extra}
    return {k: v for k, v in env.items() if v is not None}


def _base(tmp_path: Path, *more: str) -> list[str]:
    return ["logger=none", "progress=false", "predictions=[]", f"cache.dir={tmp_path / 'features'}", *more]


def rows_of(job_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (job_dir / "results").glob("*.json")}


def table_tasks(job_dir: Path) -> list[str]:
    lines = (job_dir / "results.csv").read_text().splitlines()
    col = lines[0].split(",").index("task")
    return [line.split(",")[col] for line in lines[1:]]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) has stopped running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sweep_processes(parent_pid: int) -> list[int]:
    """The live processes a sweep's parent (``parent_pid``, started in a session of its own) left: those of its session,
    and any that carries its sweep id (MOEE_SWEEP_PID, which run.py's sweep parent hands to every process it starts)."""
    mark = f"MOEE_SWEEP_PID={parent_pid}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session
            ours = int(fields[3]) == parent_pid or mark in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if ours and fields[0] != "Z":
            found.append(int(entry))
    return found


def _stalling_env(tmp_path: Path):
    return stalling_env(tmp_path, _env())


def _wait_for_marker(proc: subprocess.Popen, marker: Path, timeout: float = 400) -> int:
    deadline = time.monotonic() + timeout
    while not marker.exists() or not marker.read_text():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the job ended before dataset 2 (exit {proc.returncode}): {err[-3000:]}")
        assert time.monotonic() < deadline, "dataset 2 never started"
        time.sleep(0.2)
    return int(marker.read_text())


# ------------------------------------------------------------------------------------------- 1. one writer per dir


DIRS = """
import json, sys
sys.path.insert(0, {root!r})
import moee_exp.faults  # what run.py imports first: it registers the dirs' resolver
from omegaconf import OmegaConf
OmegaConf.register_new_resolver("now", lambda fmt: "SAME-SECOND", replace=True)  # Hydra's, both in one second
hydra = OmegaConf.load({config!r}).hydra
print(json.dumps([hydra.run.dir, hydra.sweep.dir, hydra.run.dir]))
"""


def test_issue30_1_default_run_dirs_of_two_commands_never_collide(tmp_path):
    code = DIRS.format(root=str(ROOT), config=str(ROOT / "conf" / "config.yaml"))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    (run_a, sweep_a, again_a), (run_b, sweep_b, _) = outs
    assert run_a == again_a  # one command resolves its dir once
    assert run_a.startswith("outputs/SAME-SECOND/SAME-SECOND") and sweep_a.startswith("multirun/SAME-SECOND/")
    assert run_a != run_b and sweep_a != sweep_b


# ------------------------------------------------------------------------------------------- 2. data source


def test_issue30_2_changed_data_source_is_refused(tmp_path):
    job = tmp_path / "job"
    code, err = job_in_process(job, TWO, *_base(tmp_path))
    assert code == 0, err[-3000:]
    before = {p.name: p.read_bytes() for p in (job / "results").iterdir()}
    table = (job / "results.csv").read_bytes()

    dry = [*_base(tmp_path), "tasks.data=synthetic", "tasks.names=[MoEEDemoSTS]"]
    code, err = job_in_process(job, *dry)  # a dry run into a dir of real rows
    assert code == 2, err[-3000:]
    (line,) = error_lines(err)
    assert "holds results of another config for 2 dataset(s)" in line and "data.source" in line, line
    assert "overwrite=true" in line
    assert {p.name: p.read_bytes() for p in (job / "results").iterdir()} == before
    assert (job / "results.csv").read_bytes() == table

    code, err = job_in_process(job, *dry, "overwrite=true")
    assert code == 0, err[-3000:]
    (moved,) = (job / "replaced").iterdir()  # the real rows, kept out of results/
    assert {p.name: p.read_bytes() for p in (moved / "results").iterdir()} == before
    assert sorted(rows_of(job)) == ["MoEEDemoSTS"] and rows_of(job)["MoEEDemoSTS"]["task_data"] == "synthetic"
    assert table_tasks(job) == ["MoEEDemoSTS"]


# ------------------------------------------------------------------------------------------- 3. subsets and splits


def test_issue30_3_evaluated_subsets_and_splits_are_in_the_row_identity(tmp_path):
    import copy

    import mteb

    from moee_exp.jobs import resume

    everything = mteb.get_task("STS17")
    en_en = {t.metadata.name: t for t in mteb.get_benchmark("MTEB(eng, v2)").tasks}["STS17"]  # tasks=mteb_eng_v2
    assert list(en_en.hf_subsets) == ["en-en"] and len(everything.hf_subsets) > 1
    job_ident = {"model": "m", "emb": {"kind": "hs"}}
    key = {name: resume.row_key({**job_ident, "task": resume.task_identity(t)})
           for name, t in (("all", everything), ("en-en", en_en))}
    assert key["all"] != key["en-en"]
    fewer_splits = copy.deepcopy(everything)
    fewer_splits._eval_splits = ["validation"]  # as mteb.get_task(..., eval_splits=[...]) filters them
    assert resume.task_identity(fewer_splits)["eval_splits"] == ["validation"]
    assert resume.row_key({**job_ident, "task": resume.task_identity(fewer_splits)}) != key["all"]

    # a dir holding STS17 over every subset refuses a rerun over en-en only (as a changed α is refused)
    job = tmp_path / "job"
    (job / "results").mkdir(parents=True)
    identity = {**job_ident, "task": resume.task_identity(everything)}
    (job / "results" / "STS17.json").write_text(json.dumps(
        {"task": "STS17", "task_type": "STS", "main_score": 0.8, "row_key": resume.row_key(identity),
         "identity": identity}))
    assert resume.foreign_rows(job, job_ident, [en_en]) == {"STS17": ["task.hf_subsets"]}
    assert resume.foreign_rows(job, job_ident, [everything]) == {}


# ------------------------------------------------------------------------------------------- 5. duplicate names


def test_issue30_5_duplicate_task_names_are_one_task(tmp_path, caplog):
    job = tmp_path / "job"
    names = "tasks.names=[MoEEDemoSTS,MoEEDemoSTS,MoEEDemoPairClassification]"
    with caplog.at_level(logging.WARNING, logger="moee_exp.jobs.runner"):
        code, err = job_in_process(job, names, *_base(tmp_path))
    assert code == 0, err[-3000:]
    assert table_tasks(job) == ["MoEEDemoSTS", "MoEEDemoPairClassification"]
    warned = [r.message for r in caplog.records if "more than once" in r.message]
    assert len(warned) == 1 and "MoEEDemoSTS" in warned[0]


# ------------------------------------------------------------------------------------------- 6. a row without a number


def test_issue30_6_row_with_a_valid_key_but_no_number_is_recomputed(tmp_path):
    from moee_exp.jobs.record import summarize

    job = tmp_path / "job"
    code, err = job_in_process(job, TWO, *_base(tmp_path))
    assert code == 0, err[-3000:]
    first = rows_of(job)
    for name, edit in (("MoEEDemoSTS", {"main_score": "n/a"}), ("MoEEDemoPairClassification", None)):
        row = dict(first[name])
        if edit is None:
            row.pop("main_score")
        else:
            row.update(edit)
        (job / "results" / f"{name}.json").write_text(json.dumps(row))  # row_key still valid

    code, err = job_in_process(job, TWO, *_base(tmp_path))
    assert code == 0, err[-3000:]
    again = rows_of(job)
    for name in first:
        assert again[name]["computed_at"] != first[name]["computed_at"]  # computed again, not reused
        assert again[name]["main_score"] == pytest.approx(first[name]["main_score"], abs=1e-6)
    summarize(list(again.values()))


# ------------------------------------------------------------------------------------------- 7. a hung lock holder

HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from moee_exp.features import cache
ns = cache.FeatureCache({root_dir!r}, lock_stale_s=2).namespace({{"model": "fake"}})
with ns.extract_lock():
    print("held", flush=True)
    end = time.monotonic() + {busy}
    while time.monotonic() < end:  # working: a batch done every 0.2 s
        getattr(cache, "heartbeat", lambda: None)()  # (a cache without heartbeats refreshes the lock by itself)
        time.sleep(0.2)
    print("hung", flush=True)
    time.sleep(600)  # stuck (a hung kernel): alive, threads running, no progress
"""


def test_issue30_7_hung_lock_holder_is_taken_over(tmp_path, caplog):
    """A holder that works refreshes its lock and keeps it; once stuck (alive, holding the flock, refreshing
    nothing), a waiter names it within seconds and takes the lock over after cache.lock_stale_s."""
    import socket
    import threading

    from moee_exp.features.cache import FeatureCache

    busy = 4  # s of work (> lock_stale_s=2 + 1: a lock its batches did not refresh would go stale while it works)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(root=str(ROOT), root_dir=str(tmp_path / "features"), busy=busy)],
        env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ns = FeatureCache(tmp_path / "features", lock_stale_s=2).namespace({"model": "fake"})
        outcome, started = [], time.monotonic()

        def wait():
            with ns.extract_lock():
                outcome.append(time.monotonic() - started)

        with caplog.at_level(logging.WARNING, logger="moee_exp.features.cache"):
            thread = threading.Thread(target=wait, daemon=True)
            thread.start()
            thread.join(60)
        assert outcome, "the waiter never got past a holder that makes no progress"
        assert outcome[0] > busy - 1  # not while the holder worked (its batches keep the lock fresh) ...
        who = f"held by {socket.gethostname()} pid {holder.pid} since "
        waiting = [r.message for r in caplog.records if "waiting for the extraction lock" in r.message]
        assert waiting and who in waiting[0]  # named while waiting (after LOCK_FIRST_LOG_S, 2 s)
        (took,) = [r.message for r in caplog.records if "taking over" in r.message]  # ... but once it was stuck
        assert who in took and "has not refreshed it for" in took and "cache.lock_stale_s=2" in took
        assert holder.poll() is None  # alive all along: its liveness proved nothing
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------------- 8. SIGTERM to a sweep


def test_issue30_8_a_joblib_sweep_runs_its_jobs_in_workers_and_sigterm_stops_them_all(tmp_path, monkeypatch):
    """`python run.py -m hydra/launcher=parallel`: each job runs in a joblib worker process with its own overrides,
    both at once on an empty feature cache (same model, prompt and datasets: both extract and write the same features
    at once). One job stalls in dataset 2 (tests/jobs.py: stalling_env) while the other finishes; SIGTERM to the
    sweep then ends every process of it, with one line saying how to resume, and the stopped job keeps its finished
    row. The cache the two wrote is whole: every text is read back from it, equal to a fresh extraction."""
    env, marker = _stalling_env(tmp_path)
    sweep = tmp_path / "sweep"
    parent = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "emb=hs,rw",
         "protocol=clean", f"tasks.names=[{','.join(TASKS3)}]", *_base(tmp_path), f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own session: whatever it leaves behind is ended below
    try:
        worker = _wait_for_marker(parent, marker)
        assert worker != parent.pid
        deadline = time.monotonic() + 300
        while not [d for d in sweep.iterdir() if (d / "results.csv").exists() and len(rows_of(d)) == 3]:
            assert parent.poll() is None and time.monotonic() < deadline, "the other job of the sweep never finished"
            time.sleep(0.2)
        parent.send_signal(signal.SIGTERM)
        stdout, stderr = parent.communicate(timeout=200)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # (the sweep's session: nothing else)
        if parent.returncode is None:
            parent.communicate()
    assert parent.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in stdout + stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    hints = [line for line in stderr.splitlines() if "to resume" in line]
    assert hints == [f"stopped by SIGTERM: the sweep's jobs keep their finished datasets in {sweep}/<job>/results; "
                     f"run the same command with hydra.sweep.dir={sweep} to resume"], stderr[-3000:]
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker), "a worker kept running after its sweep was stopped"
    jobs = {int(d.name): rows_of(d) for d in sweep.iterdir() if (d / "results").is_dir()}
    assert sorted(jobs) == [0, 1]
    assert sorted(len(rows) for rows in jobs.values()) == [1, 3]  # one finished, one stopped in dataset 2
    assert sorted({r["emb"] for r in rows.values()}.pop() for rows in jobs.values()) == ["hs", "rw"]  # its own override
    stalled = next(sweep / str(n) for n, rows in jobs.items() if len(rows) < 3)
    assert table_tasks(stalled) == [TASKS3[0]]  # the stopped job wrote its finished row to results.csv
    rows = {d.name: sorted(rows_of(d)) for d in sweep.iterdir() if (d / "results").is_dir()}
    while (left := _sweep_processes(parent.pid)) and time.monotonic() < deadline:  # every process of the sweep ends
        time.sleep(0.1)
    assert not left, f"processes of the stopped sweep kept running: {left}"
    assert {d.name: sorted(rows_of(d)) for d in sweep.iterdir() if (d / "results").is_dir()} == rows  # no writer left

    cache = tmp_path / "features"
    assert not [p for p in cache.rglob("*") if p.name.startswith(".tmp")]  # no writer left a temp file behind
    from conftest import tiny_model_cfg

    from moee_exp.features import featurize
    from moee_exp.features.cache import FeatureCache
    from moee_exp.features.prompts import TEMPLATES
    from moee_exp.scoring.demo_tasks import DEMO_TASKS

    task = DEMO_TASKS[TASKS3[0]]()
    task.load_data()
    texts = list(dict.fromkeys([*task.dataset["test"]["sentence1"], *task.dataset["test"]["sentence2"]]))

    def no_extraction(*args, **kwargs):
        raise AssertionError("a feature was missing from the shared cache")

    with monkeypatch.context() as patch:
        patch.setattr(featurize, "extract", no_extraction)
        cached = featurize.Featurizer(tiny_model_cfg(), TEMPLATES["prompteol"], progress=False,
                                      cache=FeatureCache(cache))(texts)
    fresh = featurize.Featurizer(tiny_model_cfg(), TEMPLATES["prompteol"], progress=False)(texts)
    for name in ("hs", "rw"):
        np.testing.assert_allclose(cached[name], fresh[name], atol=1e-5)


# ------------------------------------------------------------------------------------------- 9. Ctrl-C


def test_issue30_9_ctrl_c_is_a_clean_stop(tmp_path, monkeypatch):
    from moee_exp.jobs import runner

    evaluate_tasks = runner.evaluate_tasks

    def interrupted(*args, **kwargs):  # Ctrl-C while the 2nd dataset is computed
        for i, row in enumerate(evaluate_tasks(*args, **kwargs)):
            yield row
            if i == 0:
                raise KeyboardInterrupt

    monkeypatch.setattr(runner, "evaluate_tasks", interrupted)
    job = tmp_path / "job"
    try:
        code, err = job_in_process(job, TWO, *_base(tmp_path))
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the job as a KeyboardInterrupt (a traceback)")
    assert code == 130, err[-3000:]
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("stopped by")]
    assert line == (f"stopped by SIGINT (Ctrl-C): kept 1 of 2 dataset(s) in {job / 'results'} (and results.csv); run "
                    f"the same command with hydra.run.dir={job} to resume")
    assert table_tasks(job) == ["MoEEDemoSTS"]

    monkeypatch.setattr(runner, "evaluate_tasks", evaluate_tasks)
    code, err = job_in_process(job, TWO, *_base(tmp_path))  # the hint works: the rerun computes only the rest
    assert code == 0, err[-3000:]
    assert table_tasks(job) == ["MoEEDemoSTS", "MoEEDemoPairClassification"]


# --------------------------------------------------------------------------------------- 14. a subdir that is a file


def test_issue30_14_cache_subdir_that_is_a_file_is_one_line(tmp_path):
    code, err = job_in_process(tmp_path / "fill", "tasks.names=[MoEEDemoSTS]", *_base(tmp_path))
    assert code == 0, err[-3000:]
    (folder,) = (tmp_path / "features").glob("*/hs")
    shutil.rmtree(folder)
    folder.write_text("not a dir")
    code, err = job_in_process(tmp_path / "job", "tasks.names=[MoEEDemoSTS]", *_base(tmp_path))
    assert code == 2, err[-3000:]
    (line,) = error_lines(err)
    assert f"feature cache: {folder} is a file, not a dir" in line and "cache.dir" in line, line
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------- 15. read-only cache dir

def test_issue30_15_read_only_moee_cache_dir_that_holds_everything(tmp_path, monkeypatch):
    from conftest import tiny_model_cfg

    from moee_exp.features.featurize import model_path

    cache = tmp_path / "moee"  # MOEE_CACHE_DIR: the tiny model and the features, as a lab shares them
    model = model_path(tiny_model_cfg("tiny"))
    shutil.copytree(model, cache / "tiny" / Path(model).name)
    overrides = ["logger=none", "progress=false", "predictions=[]", "tasks.names=[MoEEDemoSTS]"]
    code, err = job_in_process(tmp_path / "fill", *overrides, f"paths.cache_dir={cache}")  # fills cache/features
    assert code == 0, err[-3000:]
    files = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}

    def job(names, name):  # MOEE_CACHE_DIR=<cache>, file permissions binding (tests/jobs.py: unprivileged)
        with monkeypatch.context() as env:
            env.setenv("MOEE_CACHE_DIR", str(cache))
            return unprivileged(job_in_process, tmp_path / name, *overrides[:-1], f"tasks.names=[{names}]")

    for p in [cache, *cache.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        code, err = job("MoEEDemoSTS", "hit")
        assert code == 0, err[-3000:]
        assert not error_lines(err)
        assert rows_of(tmp_path / "hit")["MoEEDemoSTS"]["main_score"] == \
            rows_of(tmp_path / "fill")["MoEEDemoSTS"]["main_score"]
        code, err = job("MoEEDemoClustering", "miss")  # a feature it lacks: only the needed write fails, in one line
        assert code == 2, err[-3000:]
        (line,) = error_lines(err)
        assert "is read-only and lacks the features of" in line and "Traceback" not in err
    finally:
        for p in [cache, *cache.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == files  # nothing written there
