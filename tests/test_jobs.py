"""tests/jobs.py, the harness the other tests run jobs with: `cli` is the command line in this process (its exit
codes, its output, a sweep), leaves nothing behind for the next test, and raises what the job's code raises;
`unprivileged` makes file permissions bind; `compose` is Hydra's composition (its fast path included)."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path

import pytest
from jobs import ROOT, _Tee, cli, compose, error_lines, hydra_compose, job_dirs, unprivileged

TASK = "tasks.names=[MoEEDemoSTS]"

# (command line, exit code, what its output must hold): what `python run.py ...` prints and returns
COMMANDS = {
    "unknown group option": (["emb=foo"], 1, "Could not find 'emb/foo'"),
    "Hydra type error": (["model.batch_size='x'", "logger=none"], 1, "could not be converted to Integer"),
    "our config error": (["weights.alpha=-0.5", "logger=none"], 2, "error: weights.alpha=-0.5 must be >= 0"),
    "unknown task": (["tasks.names=[STS1]", "logger=none"], 2, "unknown task(s): 'STS1' not found. Did you mean"),
    "--cfg job": (["emb=rw", "--cfg", "job", "-p", "emb.kind"], 0, "rw"),
    "--help": (["--help"], 0, "== Configuration groups =="),
    "sweep preflight": (["-m", "emb=hs,rw", "model=olmoe", "model.name_or_path=./no/such/dir", "logger=none"], 2,
                        "error: model dir './no/such/dir' does not exist"),
}


@pytest.mark.parametrize("case", list(COMMANDS))
def test_cli_gives_the_command_s_exit_code_and_output(case, tmp_cwd):
    args, code, said = COMMANDS[case]
    proc = cli(*args, cwd=tmp_cwd)
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert said in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    if code == 2:
        assert len(error_lines(proc)) == 1
    assert proc.args == ["python", "run.py", *args]


def test_cli_runs_a_job_and_leaves_nothing_behind_for_the_next_test(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    before = (list(root.handlers), root.level, sys.argv, dict(os.environ))
    handler = signal.getsignal(signal.SIGTERM)
    env = {**os.environ, "MOEE_TEST_ONLY_IN_THE_JOB": "1"}
    where = tmp_path / "elsewhere"
    where.mkdir()
    proc = cli(TASK, "logger=none", "progress=false", "hydra.run.dir=job", cwd=where, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Avg (mean of task types)" in proc.stdout  # the job's own output, as the command prints it
    assert (where / "job" / ".hydra" / "config.yaml").exists()  # Hydra's run dir, relative to cwd=
    assert (where / "job" / "results" / "MoEEDemoSTS.json").exists()
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    assert (list(root.handlers), root.level, sys.argv, dict(os.environ)) == before
    assert Path.cwd() == tmp_path and signal.getsignal(signal.SIGTERM) == handler
    assert not GlobalHydra.instance().is_initialized() and not HydraConfig.initialized()
    logging.getLogger("moee").warning("after the job")  # reaches no handler of the job (its run.log is closed)
    assert "after the job" not in (where / "job" / "run.log").read_text()


def test_cli_env_is_the_command_s_environment_and_only_its(tmp_cwd):
    """env= is the whole environment of the command (as subprocess's), read where the config reads it."""
    before = dict(os.environ)
    shared = tmp_cwd / "shared-cache"
    proc = cli("--cfg", "job", "--resolve", "-p", "paths.cache_dir", cwd=tmp_cwd,
               env={**os.environ, "MOEE_CACHE_DIR": str(shared)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(shared)
    assert dict(os.environ) == before


def test_cli_gives_each_command_its_own_default_dir(tmp_cwd):
    """The default run dir ends in an id that is random per command (a process, on the command line)."""
    for _ in range(2):
        assert cli(TASK, "logger=none", "progress=false", cwd=tmp_cwd).returncode == 0
    assert len(job_dirs(tmp_cwd / "outputs")) == 2


def test_cli_runs_a_sweep_with_hydra_s_basic_launcher(tmp_cwd):
    proc = cli("-m", "emb=hs,rw", TASK, "logger=none", "progress=false", "hydra.sweep.dir=sweep", cwd=tmp_cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.parent.parent.name for p in (tmp_cwd / "sweep").glob("*/results/MoEEDemoSTS.json")) == ["0", "1"]
    assert "Launching 2 jobs locally" in proc.stdout + proc.stderr


def test_a_sweep_job_runs_on_a_pristine_copy_of_the_config_the_sweeper_s_check_composed(tmp_cwd):
    """cli's ``_each_sweep_job_composed_once``: the launcher's composition of a job is Hydra's own (the same YAML),
    is not the object the check got (nor changed by what was done to it), and is handed out once."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from jobs import _each_sweep_job_composed_once
    from omegaconf import OmegaConf, open_dict

    from moee_exp.jobs.config import register

    register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["emb=hs,rw", TASK], RunMode.MULTIRUN)
        job = ["emb=rw", TASK]
        hydras = OmegaConf.to_yaml(loader.load_sweep_config(master, job))
        with _each_sweep_job_composed_once():
            checked = loader.load_sweep_config(master, job)
            with open_dict(checked):
                checked.weights.alpha, checked.extra = 9.0, 1  # what the check's config goes through is not seen
            launched = loader.load_sweep_config(master, job)
            again = loader.load_sweep_config(master, job)  # a third call composes anew
            other = loader.load_sweep_config(master, ["emb=hs", TASK])
        assert launched is not checked and OmegaConf.to_yaml(launched) == hydras == OmegaConf.to_yaml(again)
        assert again is not launched and other.emb.kind == "hs" != launched.emb.kind
    GlobalHydra.instance().clear()


def test_an_exception_in_the_job_s_code_is_raised_with_its_traceback(tmp_cwd, monkeypatch):
    """Not Hydra's exit 1 and a printed traceback: the test fails on the exception, and `pytest --pdb` opens at
    the job's frame that raised it."""
    from moee_exp.jobs import runner

    def write_row(job_dir, row):
        raise RuntimeError("raised in the job")

    monkeypatch.setattr(runner, "write_row", write_row)
    with pytest.raises(RuntimeError, match="raised in the job") as raised:
        cli(TASK, "logger=none", "progress=false", cwd=tmp_cwd)
    frames = [frame.f_code for frame, _ in traceback.walk_tb(raised.value.__traceback__)]
    assert frames[-1] is write_row.__code__  # the innermost frame is where it was raised
    assert any(code.co_filename.endswith(os.path.join("moee_exp", "jobs", "runner.py")) for code in frames)
    assert Path.cwd() == tmp_cwd  # restored on the way out


def test_the_job_s_output_also_reaches_the_stream_it_replaces(capsys):
    tee = _Tee(sys.stdout)
    tee.write("line for both\n")
    tee.flush()
    assert tee.getvalue() == "line for both\n"
    assert capsys.readouterr().out == "line for both\n"  # pytest's capture: shown with a failing test's report


def test_compose_is_the_job_s_config_and_keeps_hydra_s_node_only_when_asked():
    cfg = compose("emb=rw", "weights.alpha=0.5")
    assert cfg.emb.kind == "rw" and cfg.weights.alpha == 0.5 and "hydra" not in cfg
    full = compose("emb=rw", hydra=True)
    assert full.hydra.runtime.choices.emb == "rw" and full.hydra.overrides.task == ["emb=rw"]
    assert full.hydra.run.dir.startswith("outputs/")


def test_unprivileged_binds_file_permissions_in_its_thread_only(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)

    def probe():
        try:
            secret.read_text()
            read = True
        except PermissionError:
            read = False
        return read, os.access(locked, os.W_OK), threading.current_thread() is threading.main_thread()

    assert unprivileged(probe) == (False, False, False)
    if os.geteuid() == 0:  # root: this thread keeps its capabilities
        assert secret.read_text() == "x" and os.access(locked, os.W_OK)


def test_unprivileged_returns_and_raises_what_the_function_does():
    assert unprivileged(lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(ZeroDivisionError):
        unprivileged(lambda: 1 / 0)


def test_the_harness_is_the_only_place_tests_compose_or_run_jobs():
    """One compose helper and one command-line harness: no test module builds its own."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text()
        own = re.findall(r"^def (run|cli|compose|run_job|job_in_process|run_process)\(", text, re.M)  # the harness's
        if "initialize_config_dir" in text or "prewarmed" in text or own:
            offenders.append(path.name)
    assert offenders == []


# Value overrides of every kind Hydra accepts or rejects, on group choices (an experiment added with + among them), in
# either order, and what the fast path hands to Hydra's full compose (a sweep, + of a key, a hydra group).
COMPOSE_CASES = [
    [], ["weights.alpha=0.3"], ["weights.alpha=high"], ["weights.alpha=nan"], ["model.batch_size='x'"],
    ["emb.alphaa=1"], ["nope=1"], ["model.name='☃ ünï'"], ["model.max_length=${nope}"], ["tasks.names=[]"],
    ["tasks.names=[MoEEDemoSTS,'x']"], ["prompt.name=null"], ["overwrite=maybe"], ["model.dtype={a: 1}"],
    ["logger=wandb", "logger.project=''"], ["logger=wandb", "logger.tags=[1,null]"], ["logger=nope"],
    ["emb=hs", "emb.kind=rw"], ["weights.alpha=0.1,0.2"], ["model.device=cuda:7", "model.max_length=-1"],
    ["paths.cache_dir='/dev/null/x'"], ["model.max_length=1e309"], ["predictions=[STX]"],
    ["hydra/launcher=basic", "weights.alpha=0.2"], ["+experiment=alpha"], ["model.name=[unclosed"],
    ["weights.alpha=0.2", "emb=moee_sum"], ["emb=moee_sum", "weights.alpha=0.2", "weights.alpha=0.4"],
    ["model=olmoe", "model.tiny.config.hidden_size=8", "protocol=clean"], ["model.revision=${model.name}"],
    ["hydra.run.dir=x", "model.batch_size=3"], ["tasks=paper", "tasks.names=[STS12]"],
    ["+experiment=alpha", "weights.alpha=0.3"], ["model=tiny", "+experiment=paper_main", "tasks=sts", "emb=hs"],
    ["+experiment=nope"], ["+weights=fixed"], ["+nope=1"], ["+experiment=prompts", "prompt.name=x", "model=olmoe"],
]


@pytest.mark.parametrize("overrides", COMPOSE_CASES, ids=lambda o: " ".join(o) or "none")
def test_compose_is_hydras_compose(overrides):
    """compose (a group choice's composition made once, the values set on a copy) gives what Hydra's compose gives:
    the same config, or the same exception and message; and a config handed out is never the cached one."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    def outcome(compose):
        try:
            cfg = compose(*overrides)
            return "ok", OmegaConf.to_yaml(cfg), OmegaConf.is_struct(cfg)  # (yaml: NaN equals NaN)
        except HydraException as err:
            return type(err).__name__, str(err), str(err.__cause__)

    full, fast = outcome(hydra_compose), outcome(compose)
    assert fast == full
    if fast[0] == "ok":
        compose(*overrides).model.name = "changed"
        assert outcome(compose) == full
