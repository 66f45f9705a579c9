"""Issue 30's faults and messages, each one line naming the fix: W&B and Hydra's own writes on a full disk (or a
file-size limit), mteb_results that cannot be a dir, nested config fields, the README's instruction-table syntax,
and the embed CLI's input, model, output and --standardize batch. Jobs run in this process (run.py's job(), as
tests/test_fuzz.py does); a subprocess only where a file-size limit (a process's) is what is tested."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from jobs import compose, job_in_process, preexec_file_size_limit, process, run_py

TASK = "tasks.names=[MoEEDemoSTS]"


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a job gets as far as loading the model."""
    import moee_exp.features.featurize as featurize

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(featurize, "load_model", load_model)


# ------------------------------------------------------------------------------------------------ 30.10 W&B


def test_issue30_10_wandb_on_a_full_disk_is_one_line(tmp_path, monkeypatch, caplog, capfd):
    """W&B's own debug log on a full disk: each record it cannot write must not print a traceback; the job goes on
    with local results and says so once."""
    import wandb

    from moee_exp.jobs.runner import run_job

    class FullDisk(io.StringIO):
        def write(self, s):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def init(**kwargs):  # what wandb.init does on a full disk: its debug log fails record after record, then it raises
        debug = logging.getLogger("wandb-debug-on-full-disk")
        handler = logging.StreamHandler(FullDisk())
        debug.addHandler(handler)
        try:
            for i in range(50):
                debug.warning("record %d", i)
        finally:
            debug.removeHandler(handler)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(kwargs["dir"]) / "wandb" / "debug.log"))

    monkeypatch.setattr(wandb, "init", init)
    cfg = compose(TASK, "logger=wandb", "progress=false")
    with caplog.at_level(logging.WARNING, logger="moee_exp.jobs.record"):
        rows = run_job(cfg, tmp_path / "job", "group")
    assert len(rows) == 1 and (tmp_path / "job" / "results" / "MoEEDemoSTS.json").exists()
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err, err[:2000]
    lines = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert len(lines) == 1 and "the disk is full" in lines[0] and "debug.log" in lines[0], lines


def test_issue30_10_wandb_is_not_started_without_room_to_write(tmp_path):
    """A file-size limit (or a full disk) found before W&B starts: one line, and W&B is not even imported."""
    code = ("import logging, sys\n"
            "from moee_exp.jobs.record import LoggerConfig, _open_run\n"
            f"run = _open_run(LoggerConfig(backend='wandb'), {{'dir': {str(tmp_path)!r}}})\n"
            "assert run is None and 'wandb' not in sys.modules\n")
    proc = process([sys.executable, "-c", code], timeout=120, preexec=preexec_file_size_limit(64),
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "W&B not started" in lines[0] and "file-size limit" in lines[0], lines


# ------------------------------------------------------------------------------------------ 30.11 Hydra writes


def test_issue30_11_hydra_config_write_on_a_file_size_limit_is_one_line(tmp_path):
    proc = process(run_py("logger=none", TASK, f"hydra.run.dir={tmp_path / 'job'}"), timeout=300, cwd=tmp_path,
                   preexec=preexec_file_size_limit(1), env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: cannot write ") and ".hydra" in lines[0] and "file-size limit" in lines[0]


# ------------------------------------------------------------------------------------------ 30.12 mteb_results


def test_issue30_12_mteb_results_is_a_file(tmp_path, no_model_load):
    target = tmp_path / "results.txt"
    target.write_text("not a dir")
    code, err = job_in_process(tmp_path / "job", TASK, "logger=none", "protocol=clean", f"mteb_results={target}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: mteb_results=") and "is not a dir" in lines[0]


def test_issue30_12_mteb_results_cannot_be_created(tmp_path, no_model_load):
    (tmp_path / "file").write_text("x")
    code, err = job_in_process(tmp_path / "job", TASK, "logger=none", "protocol=clean",
                               f"mteb_results={tmp_path / 'file' / 'sub'}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: mteb_results="), err


# -------------------------------------------------------------------------------------- 30.13 nested fields


@pytest.mark.parametrize("overrides, says", [
    (["tasks.data=synthetic", "tasks.synthetic.seed=-1"], "tasks.synthetic.seed=-1 must be >= 0"),
    (["tasks.data=synthetic", "tasks.synthetic.seed=99999999999"], "tasks.synthetic.seed=99999999999 is too large"),
    # a typo in a nested field is caught even where the job does not read it (here: real data)
    (["tasks.synthetic.size=huge"], "tasks.synthetic.size='huge' is not one of: small, real"),
])
def test_issue30_13_nested_config_fields_are_checked(tmp_path, no_model_load, overrides, says):
    code, err = job_in_process(tmp_path / "job", TASK, "logger=none", *overrides)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err


# ------------------------------------------------------------------------------- 30.16 the instruction table


@pytest.mark.parametrize("protocol", ["paper", "clean"])
def test_issue30_16_readme_instruction_table_syntax_works_as_written(protocol):
    from moee_exp.jobs.config import read_job

    cfg = compose(f"protocol={protocol}", "protocol.instructions=custom",
                   'protocol.instruction_table={MoEEDemoSTS: "x"}')  # the README's syntax, without a +
    job = read_job(cfg, here=False)
    assert job.spec.protocol.instruction_table == {"MoEEDemoSTS": "x"}
    # a misspelt protocol key is still refused (only the table takes new keys)
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose("protocol.instructionz=e5")


# ----------------------------------------------------------------------------------------- 30.17 embed CLI


def _embed(*args, stdin: bytes | None = None, monkeypatch=None) -> tuple[int, str]:
    from moee_exp.integrations import embed

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = embed.main(list(args))
    return code, err.getvalue()


@pytest.mark.parametrize("source", ["-", "/dev/stdin"])
def test_issue30_17_embed_reads_stdin(tmp_path, monkeypatch, source):
    from moee_exp.integrations import embed

    if source == "/dev/stdin":  # a real pipe on fd 0: what a shell's `... | moee-embed --input /dev/stdin` gives
        read, write = os.pipe()
        os.write(write, "first text\nsecond text\n".encode())
        os.close(write)
        saved = os.dup(0)
        os.dup2(read, 0)
        os.close(read)
        try:
            texts = embed.read_texts(Path(source), "utf-8")
        finally:
            os.dup2(saved, 0)
            os.close(saved)
        assert texts == ["first text", "second text"]
        return
    out = tmp_path / "e.npz"
    code, err = _embed("--model", "tiny", "--input", "-", "--output", str(out), stdin=b"first text\nsecond text\n",
                       monkeypatch=monkeypatch)
    assert code == 0, err
    assert np.load(out)["emb"].shape[0] == 2


def test_issue30_17_embed_bad_model_names_the_option(tmp_path):
    (tmp_path / "in.txt").write_text("a text\n")
    code, err = _embed("--model", str(tmp_path / "no" / "such"), "--input", str(tmp_path / "in.txt"),
                       "--output", str(tmp_path / "e.npz"))
    assert code == 2 and err.startswith("error: ") and "--model" in err and "model.name_or_path" not in err, err


def test_issue30_17_embed_full_disk_names_the_path(tmp_path, monkeypatch):
    from moee_exp.integrations import embed

    def savez(f, **arrays):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(embed.np, "savez", savez)
    (tmp_path / "in.txt").write_text("a text\nanother\n")
    out = tmp_path / "out" / "e.npz"
    code, err = _embed("--model", "tiny", "--input", str(tmp_path / "in.txt"), "--output", str(out))
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # (stderr also has progress bars)
    assert code == 2 and len(errors) == 1 and str(out) in errors[0] and "disk is full" in errors[0], err
    assert "Traceback" not in err
    assert not list(out.parent.glob(".*tmp"))  # no temp file left


def test_issue30_17_embed_refuses_batch_standardize_of_one_text(tmp_path, no_model_load):
    (tmp_path / "in.txt").write_text("one text\n")
    out = tmp_path / "e.npz"
    code, err = _embed("--model", "tiny", "--input", str(tmp_path / "in.txt"), "--output", str(out),
                       "--standardize", "batch")
    assert code == 2 and err.startswith("error: --standardize batch") and "all zeros" in err, err
    assert not out.exists()
