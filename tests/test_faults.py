"""Faults of a shared GPU cluster (issue 18): unreadable shared files, read-only caches, full disks and file-size
limits, uncreatable output dirs, hung extraction-lock holders, reruns with a changed config, preemption.

Permission faults need a process that file modes bind: as root it runs under ``setpriv`` with the capabilities that
bypass them dropped (skipped where setpriv is missing). File-size limits are real (RLIMIT_FSIZE in a subprocess:
writes raise EFBIG, Python ignores SIGXFSZ); a full disk is simulated in-process (ENOSPC from the write call).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from moee_exp.cache import FeatureCache, text_key

TASK = "tasks.names=[MoEEDemoSTS]"
SETPRIV = shutil.which("setpriv")


def _env(**extra):
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **extra}


def unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` in a process that file permissions bind (root: without the capabilities that override them)."""
    if os.geteuid() != 0:
        return cmd
    if SETPRIV is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop CAP_DAC_OVERRIDE")
    return [SETPRIV, "--bounding-set", "-dac_override,-dac_read_search,-fowner", *cmd]


def python(code: str, *, cwd, unpriv=False, env=None, timeout=600):
    cmd = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(unprivileged(cmd) if unpriv else cmd, cwd=cwd, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from moee_exp.config import register

    register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# In a subprocess: compose the config and run it as `python run.py` does (run.job), print the exit code.
JOB = """
import sys
sys.path.insert(0, {root!r})
from hydra import compose, initialize_config_dir
import run
with initialize_config_dir({conf!r}, version_base="1.3"):
    cfg = compose("config", overrides={overrides!r})
print("exit", run.job(cfg, {job!r}, "group"))
"""


def job_in_subprocess(overrides, job: Path, *, cwd, unpriv=False):
    code = JOB.format(root=str(ROOT), conf=str(ROOT / "conf"), overrides=list(overrides), job=str(job))
    return python(code, cwd=cwd, unpriv=unpriv)


# ------------------------------------------------------------------------- 1. unreadable shard (permission denied)

IDENT = {"model": "fake", "template": "{text}"}


def test_unreadable_shard_is_skipped_left_in_place_and_logged_once(tmp_path):
    """A shard this user cannot read (a group-shared cache) is another user's good features: never removed."""
    root = tmp_path / "features"
    keys = [text_key(f"text {i}") for i in range(5)]
    FeatureCache(root).namespace(IDENT).put(keys, "hs", np.arange(20, dtype=np.float32).reshape(5, 4))
    (shard,) = (root).glob("*/hs/*.npy")
    data = shard.read_bytes()
    shard.chmod(0o000)
    proc = python(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        from moee_exp.cache import FeatureCache, text_key
        ns = FeatureCache({str(root)!r}).namespace({IDENT!r})
        keys = [text_key(f"text {{i}}") for i in range(5)]
        print("cached", int(ns.contains(keys, "hs").sum()), int(ns.contains(keys, "hs").sum()))
    """, cwd=tmp_path, unpriv=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cached 0 0" in proc.stdout  # not served (it cannot be read) ...
    assert shard.exists() and shard.read_bytes() == data  # ... and still there, bytes untouched
    assert (shard.stat().st_mode & 0o777) == 0
    assert proc.stderr.count("unreadable shard") == 1, proc.stderr  # logged once per process
    assert "removing" not in proc.stderr


# ------------------------------------------------------------------------- 5. a read-only cache that holds everything


def test_read_only_cache_serves_a_job_it_holds_and_names_cache_dir_when_it_does_not(tmp_path):
    cache = tmp_path / "features"
    common = ["logger=none", "progress=false", f"cache.dir={cache}", "predictions=[]"]
    first = job_in_subprocess([TASK, *common], tmp_path / "fill", cwd=tmp_path)  # fills the cache (writable)
    assert "exit 0" in first.stdout, first.stderr[-3000:]
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    for p in [cache, *cache.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)  # the lab's shared, read-only copy
    try:
        hit = job_in_subprocess([TASK, *common], tmp_path / "hit", cwd=tmp_path, unpriv=True)
        assert "exit 0" in hit.stdout, hit.stderr[-3000:]
        assert not error_lines(hit.stderr)
        assert json.loads((tmp_path / "hit" / "results" / "MoEEDemoSTS.json").read_text())["main_score"] == \
            json.loads((tmp_path / "fill" / "results" / "MoEEDemoSTS.json").read_text())["main_score"]

        miss = job_in_subprocess(["tasks.names=[MoEEDemoClustering]", *common], tmp_path / "miss", cwd=tmp_path,
                                 unpriv=True)
        assert "exit 2" in miss.stdout, miss.stderr[-3000:]
        (line,) = error_lines(miss.stderr)
        assert f"cache.dir={cache} is read-only and lacks the features of" in line and "writable dir" in line
        assert "Traceback" not in miss.stderr
    finally:
        for p in [cache, *cache.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == before  # nothing written or removed
