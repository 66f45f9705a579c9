"""Faults of a shared GPU cluster (issue 18): unreadable shared files, read-only caches, full disks and file-size
limits, uncreatable output dirs, hung extraction-lock holders, reruns with a changed config, preemption.

Permission faults are real (EACCES from the kernel), in-process: as root, in a thread without the capabilities
that bypass file modes (tests/jobs.py: unprivileged). File-size limits are real too, in-process: the kernel's
RLIMIT_FSIZE on the test's process for the job's duration (writes raise EFBIG; Python ignores SIGXFSZ); a full disk
is simulated in-process (ENOSPC from the write call). SIGTERM to a job is a process too; submitit's requeue is
tests/test_launchers.py's, a hung lock holder tests/test_issue30_jobs.py's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tiny_model_cfg
from jobs import (cli, compose, error_lines, file_size_limit, job_in_process, output, run_py, stalling_env,
                  start, unprivileged, wandb_summary)

from moee_exp.features.cache import FeatureCache, text_key

TASK = "tasks.names=[MoEEDemoSTS]"


def _env(**extra):
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **extra}


# ------------------------------------------------------------------------- 1. unreadable shard (permission denied)

IDENT = {"model": "fake", "template": "{text}"}


def test_unreadable_shard_is_skipped_left_in_place_and_logged_once(tmp_path, caplog):
    """A shard this user cannot read (a group-shared cache) is another user's good features: never removed."""
    root = tmp_path / "features"
    keys = [text_key(f"text {i}") for i in range(5)]
    FeatureCache(root).namespace(IDENT).put(keys, "hs", np.arange(20, dtype=np.float32).reshape(5, 4))
    (shard,) = (root).glob("*/hs/*.npy")
    data = shard.read_bytes()
    shard.chmod(0o000)
    ns = FeatureCache(root).namespace(IDENT)  # a new namespace object: as a new process sees the cache
    with caplog.at_level(logging.INFO, logger="moee_exp.features.cache"):
        cached = unprivileged(lambda: [int(ns.contains(keys, "hs").sum()), int(ns.contains(keys, "hs").sum())])
    assert cached == [0, 0]  # not served (it cannot be read) ...
    assert shard.exists() and shard.read_bytes() == data  # ... and still there, bytes untouched
    assert (shard.stat().st_mode & 0o777) == 0
    assert caplog.text.count("unreadable shard") == 1, caplog.text  # logged once per namespace
    assert "removing" not in caplog.text


# ------------------------------------------------------------------------- 5. a read-only cache that holds everything


def test_read_only_cache_serves_a_job_it_holds_and_names_cache_dir_when_it_does_not(tmp_path):
    cache = tmp_path / "features"
    common = ["logger=none", "progress=false", f"cache.dir={cache}", "predictions=[]"]
    code, stderr = job_in_process(tmp_path / "fill", TASK, *common)  # fills the cache (writable)
    assert code == 0, stderr[-3000:]
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    for p in [cache, *cache.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)  # the lab's shared, read-only copy
    try:
        code, stderr = unprivileged(job_in_process, tmp_path / "hit", TASK, *common)
        assert code == 0, stderr[-3000:]
        assert not error_lines(stderr)
        assert json.loads((tmp_path / "hit" / "results" / "MoEEDemoSTS.json").read_text())["main_score"] == \
            json.loads((tmp_path / "fill" / "results" / "MoEEDemoSTS.json").read_text())["main_score"]

        code, stderr = unprivileged(job_in_process, tmp_path / "miss", "tasks.names=[MoEEDemoClustering]", *common)
        assert code == 2, stderr[-3000:]
        (line,) = error_lines(stderr)
        assert f"cache.dir={cache} is read-only and lacks the features of" in line and "writable dir" in line
        assert "Traceback" not in stderr
    finally:
        for p in [cache, *cache.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == before  # nothing written or removed


# ------------------------------------------------------------------------- 2. full disk, quota, file-size limit


def test_full_disk_while_writing_a_row_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno

    from moee_exp.errors import USER_ERRORS, error_line
    from moee_exp.jobs import record

    job = tmp_path / "job"
    record.write_row(job, {"task": "T", "score": 1})
    real = Path.write_text

    def full_disk(self, data, *args, **kwargs):  # half the bytes land, then the disk is full
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    for write in (lambda: record.write_row(job, {"task": "T", "score": 2}),
                  lambda: record.write_table(job, [{"task": "T", "score": 2}])):
        with pytest.raises(USER_ERRORS) as caught:
            write()
        line = error_line(caught.value)
        assert line.startswith(f"error: cannot write {job}") and "the disk is full; free space" in line, line
        assert "hydra.run.dir" in line and "the same command resumes" in line
    monkeypatch.undo()
    assert json.loads((job / "results" / "T.json").read_text()) == {"task": "T", "score": 1}  # untouched
    assert not (job / "results.csv").exists()
    assert [p.name for p in job.rglob("*") if p.is_file()] == ["T.json"]  # no temp file left


def test_file_size_limit_in_the_tiny_model_build_is_one_error_and_leaves_no_half_built_model(tmp_path):
    import yaml

    from moee_exp.errors import USER_ERRORS, error_line
    from moee_exp.features.tiny import ensure_tiny_model

    spec = yaml.safe_load((ROOT / "conf/model/tiny.yaml").read_text())["tiny"]
    with pytest.raises(USER_ERRORS) as err, file_size_limit(6):
        ensure_tiny_model(spec, str(tmp_path / "models"))
    line = error_line(err.value)
    assert f"cannot write {tmp_path / 'models' / 'tiny'}" in line and "file-size limit" in line, line
    assert "model.cache_dir" in line and "\n" not in line
    assert [p.name for p in (tmp_path / "models" / "tiny").iterdir()] == []  # no half-built model dir


def test_file_size_limit_in_a_job_is_one_error_line_and_the_rerun_resumes(tmp_path):
    from moee_exp.features.featurize import model_path

    model_path(tiny_model_cfg())  # the session's tiny model is built (unlimited) before the limited job
    job = tmp_path / "job"
    args = ["tasks.names=[MoEEDemoSTS,MoEEDemoReranking]", "logger=none", "protocol=clean",
            "progress=false", f"cache.dir={tmp_path / 'features'}"]
    with file_size_limit(6):  # 6 KiB: the STS row fits, the reranking row (its per-query scores) does not
        code, stderr = job_in_process(job, *args)
    assert code == 2, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert line.startswith(f"error: cannot write {job}") and "file-size limit (ulimit -f)" in line, line
    assert "Traceback" not in stderr
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]
    kept = sorted(p.stem for p in (job / "results").glob("*.json"))
    assert kept == ["MoEEDemoSTS"]
    rerun = cli(*args, f"hydra.run.dir={job}", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "reusing 1 result(s)" in rerun.stderr + rerun.stdout
    assert sorted(p.stem for p in (job / "results").glob("*.json")) == ["MoEEDemoReranking", "MoEEDemoSTS"]


# ------------------------------------------------------------------------- 3. an output dir that cannot be created


@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_output_dir_that_cannot_be_created_is_one_error_line(tmp_path, mode):
    (tmp_path / "a_file").write_text("not a dir")
    key = "hydra.run.dir" if mode == "run" else "hydra.sweep.dir"
    proc = cli(*(["-m", "emb=hs,rw"] if mode == "sweep" else []), TASK, "logger=none",
               f"{key}={tmp_path / 'a_file' / 'out'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "NotADirectoryError" not in proc.stderr
    assert error_lines(proc.stderr) == [f"error: {key}='{tmp_path / 'a_file' / 'out'}' cannot be used: "
                                        f"'{tmp_path / 'a_file'}' is not a dir; point {key} at a writable dir"]


def test_unwritable_output_dir_is_one_error_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    proc = unprivileged(cli, TASK, "logger=none", f"hydra.run.dir={locked / 'out'}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert error_lines(proc.stderr) == [f"error: hydra.run.dir='{locked / 'out'}' cannot be used: '{locked}' is not "
                                        "writable; point hydra.run.dir at a writable dir"]


# ------------------------------------------------------------------------- 6. a rerun with a changed config


def test_rerun_with_a_changed_config_keeps_the_old_rows_and_never_mixes_two_configs(tmp_path):
    from moee_exp.errors import ConfigError
    from moee_exp.jobs.runner import run_job

    job, both = tmp_path / "job", "tasks.names=[MoEEDemoSTS,MoEEDemoPairClassification]"
    base = ["logger=none", "progress=false", "emb=moee_sum", f"cache.dir={tmp_path / 'features'}"]
    run_job(compose(both, *base, "weights.alpha=1.0"), job, "g")
    before = {p.name: p.read_bytes() for p in (job / "results").iterdir()}
    table = (job / "results.csv").read_bytes()

    with pytest.raises(ConfigError) as refused:  # one dataset, another α, into the same dir
        run_job(compose(TASK, *base, "weights.alpha=0.5"), job, "g")
    message = str(refused.value)
    assert "holds results of another config for 2 dataset(s)" in message and "weights" in message
    assert "overwrite=true" in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in (job / "results").iterdir()} == before  # nothing replaced
    assert (job / "results.csv").read_bytes() == table

    rows = run_job(compose(TASK, *base, "weights.alpha=0.5", "overwrite=true"), job, "g")
    assert [(r["task"], r["alpha"]) for r in rows] == [("MoEEDemoSTS", 0.5)]
    (moved,) = (job / "replaced").iterdir()  # the α=1 rows are kept, out of results/
    assert {p.name: p.read_bytes() for p in (moved / "results").iterdir()} == before
    assert {json.loads(p.read_text())["alpha"] for p in (job / "results").glob("*.json")} == {0.5}
    assert sorted(p.name for p in (job / "results").iterdir()) == ["MoEEDemoSTS.json"]
    assert (job / "results.csv").read_text().count("\n") == 2  # header + the one α=0.5 row


# ------------------------------------------------------------------------- 4. the extraction lock: hung or dead holders

# A hung holder, alive and refreshing nothing: tests/test_issue30_jobs.py::test_issue30_7_hung_lock_holder_is_taken_over


def dead_pid() -> int:
    """A pid no process on this host has: the kernel's pid_max (pids are below it)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def _wait_in_thread(ns):
    """Enter and leave ns.extract_lock() in a thread: (thread, outcome list). A thread, so that a waiter that
    waits for ever (today's flock) fails the test instead of hanging it."""
    import threading

    outcome = []

    def wait():
        try:
            with ns.extract_lock():
                outcome.append("entered")
        except BaseException as err:  # noqa: BLE001
            outcome.append(err)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, outcome


def test_dead_lock_holder_on_this_host_is_taken_over(tmp_path, caplog):
    """The flock outlives its holder's pid (e.g. a child that inherited the descriptor, or NFS's lock manager)."""
    import fcntl
    import logging
    import socket

    ns = FeatureCache(tmp_path / "features").namespace(IDENT)
    ns.path.mkdir(parents=True)
    dead = dead_pid()
    with open(ns.path / ".extract.lock", "w+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        f.write(json.dumps({"host": socket.gethostname(), "pid": dead, "since": "then"}).encode())
        f.flush()
        with caplog.at_level(logging.WARNING, logger="moee_exp.features.cache"):
            thread, outcome = _wait_in_thread(ns)
            thread.join(120)
    assert outcome == ["entered"]
    assert f"pid {dead} since then, which is gone: taking over" in caplog.text


def test_lock_wait_limit_ends_with_one_line(tmp_path):
    """The holder is alive and refreshing (never taken over): a thread of this process, holding the lock through its
    own open file (flock locks are per open file, so another open of it in this process waits)."""
    import threading

    from moee_exp.errors import USER_ERRORS, error_line

    held, release = threading.Event(), threading.Event()

    def hold():
        with FeatureCache(tmp_path / "features", lock_stale_s=300).namespace(IDENT).extract_lock():
            held.set()
            release.wait(120)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert held.wait(60)
        ns = FeatureCache(tmp_path / "features", lock_wait_s=1).namespace(IDENT)
        thread, outcome = _wait_in_thread(ns)
        thread.join(120)
        (err,) = outcome
        assert isinstance(err, USER_ERRORS), repr(err)
        line = error_line(err)
        assert line.startswith("error: gave up after ") and f"pid {os.getpid()}" in line
        assert "raise cache.lock_wait_s (0 waits for ever)" in line
    finally:
        release.set()
        holder.join(60)


# ------------------------------------------------------------------------- preemption: SIGTERM, SIGUSR1, submitit

TASKS3 = ["MoEEDemoSTS", "MoEEDemoPairClassification", "MoEEDemoSummarization"]
def _stalling_env(tmp_path):
    return stalling_env(tmp_path, _env())


def _signal_when_in_flight(proc, marker, signum):
    import signal
    import time

    deadline = time.monotonic() + 400
    while not marker.exists() or not marker.read_text():
        assert proc.poll() is None, f"the job ended before dataset 2: {output(proc)[1][-3000:]}"
        assert time.monotonic() < deadline, "dataset 2 never started"
        time.sleep(0.2)
    os.kill(int(marker.read_text()), signum)
    return signal


def test_preemption_signal_sigusr1_raises_preempted_only_inside_the_job():
    import signal

    from moee_exp.faults import Preempted, preemptible

    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(Preempted) as caught, preemptible():
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert caught.value.name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) == before


def test_sigterm_keeps_finished_rows_writes_results_csv_and_wandb_and_says_how_to_resume(tmp_path):
    import signal

    env, marker = _stalling_env(tmp_path)
    job = tmp_path / "job"
    proc = start(run_py(f"tasks.names=[{','.join(TASKS3)}]", "logger=wandb", "progress=false", "protocol=clean",
                        f"cache.dir={tmp_path / 'features'}", f"hydra.run.dir={job}"), cwd=tmp_path, env=env)
    try:
        _signal_when_in_flight(proc, marker, signal.SIGTERM)
        proc.wait(300)
    finally:
        proc.kill()
        proc.wait()
    _, stderr = output(proc)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    assert stopped == [f"stopped by SIGTERM: kept 1 of 3 dataset(s) in {job / 'results'} (and results.csv); run the "
                       f"same command with hydra.run.dir={job} to resume"]
    assert sorted(p.stem for p in (job / "results").glob("*.json")) == [TASKS3[0]]
    table = (job / "results.csv").read_text().splitlines()
    assert len(table) == 2 and table[1].split(",")[table[0].split(",").index("task")] == TASKS3[0]
    summary = wandb_summary(job)["summary"]
    assert f"STS/{TASKS3[0]}" in summary and "avg" in summary
    assert not [p for p in job.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------- the embed CLI: cache dir, max length


def test_embed_cli_reads_moee_cache_dir(monkeypatch):
    from moee_exp.integrations.embed import parse_args

    monkeypatch.setenv("MOEE_CACHE_DIR", "/somewhere/shared")
    assert parse_args(["--model", "tiny", "--input", "x", "--output", "y.npz"]).cache_dir == "/somewhere/shared"
    monkeypatch.delenv("MOEE_CACHE_DIR")
    assert parse_args(["--model", "tiny", "--input", "x", "--output", "y.npz"]).cache_dir == "~/.cache/moee_exp"


def test_embed_cli_default_max_length_adapts_to_a_short_context_and_an_explicit_one_is_checked(tmp_path, capsys):
    from moee_exp.features.featurize import model_path
    from moee_exp.integrations.embed import main

    short = tmp_path / "short_model"  # the tiny model with a 256-token context
    shutil.copytree(model_path(tiny_model_cfg()), short)
    config = json.loads((short / "config.json").read_text())
    config["max_position_embeddings"] = 256
    (short / "config.json").write_text(json.dumps(config))
    (tmp_path / "in.txt").write_text("a text\n" + "long " * 400 + "\n")
    args = ["--model", str(short), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.npz")]
    assert main(args) == 0, capsys.readouterr().err
    assert np.load(tmp_path / "out.npz")["emb"].shape[0] == 2
    capsys.readouterr()
    assert main([*args, "--max-length", "512"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "error: --max-length=512 exceeds the model's max_position_embeddings=256; set --max-length=256 or less"]
