"""Jobs for tests, in this process: what `python run.py ...` does, without a new interpreter.

- ``compose(*overrides)``: the job's config from Hydra's compose API (``hydra=True`` keeps the ``hydra`` node,
  as ``--cfg all`` shows it); each group choice composed once per test process, the values set on a copy.
- ``job_in_process(job_dir, *overrides)``: what `python run.py <overrides> hydra.run.dir=<job_dir>` does after Hydra
  made the job dir: run.py's ``job`` on the composed config, its stdout swallowed. Returns (exit code, stderr).
- ``cli(*args, cwd=...)``: the command line itself, in-process: run.py's ``main`` with ``sys.argv`` set, so Hydra
  parses the arguments, composes, runs its callbacks (preflight), makes the job dir, writes ``.hydra/``, sets up
  logging and, for ``-m``, runs each job of the sweep with its basic launcher, as the command does (the launcher
  reuses the config the sweeper's check composed for the job: ``_each_sweep_job_composed_once``). Returns what
  ``subprocess.run(..., capture_output=True, text=True)`` returns: ``returncode`` (``sys.exit``'s code, 1 where Hydra
  rejects the command), ``stdout``, ``stderr``.
  An exception from the job's own code is not turned into Hydra's exit 1: it is raised here, with its traceback, so
  that the test fails on it and ``pytest --pdb`` (or a ``breakpoint()`` in the job's code) stops where it happened.
- ``unprivileged(fn, ...)``: ``fn`` with file permissions binding it (root's file capabilities dropped, in a thread).
- ``file_size_limit(kib)``: the kernel's file-size limit (RLIMIT_FSIZE) on this process for a ``with`` block.
- ``process(cmd, ...)`` / ``start(cmd, ...)``: a real process (plain ``subprocess``), for what only a process shows:
  launchers that start processes (submitit, joblib), signals, kill -9, concurrent jobs, a fresh interpreter's
  imports, and the command itself where the test is that the command and ``cli`` agree;
  ``preexec=preexec_file_size_limit(kib)`` starts it under a file-size limit.
- ``wandb_summary(job_dir)`` / ``wandb_records(job_dir)``: an offline W&B run read back by W&B's own reader
  (``wandb leet inspect``, the wandb-core binary).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hydra_compose(*overrides, hydra: bool = False):
    """The config `python run.py <overrides>` composes: Hydra's compose API, our schemas registered."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from moee_exp.jobs.config import register

    register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)


_COMPOSED: dict = {}  # group choices -> the config Hydra composed for them (once per test process)


def compose(*overrides, hydra: bool = False):
    """``hydra_compose(*overrides)``, made fast as lightning-hydra-template's tests do it (compose once, then set
    values on a copy), with Hydra's own code doing each step.

    The composition depends only on the group choices (`logger=wandb`, `model=olmoe`, `+experiment=alpha`); Hydra
    then applies each `key=value` override in order (ConfigLoaderImpl._apply_overrides_to_config, struct mode on).
    Here the group choices' composition is made once and each call applies its value overrides, with Hydra's own
    parser and function, to a copy of it: the same config, or the same exception and message
    (tests/test_jobs.py::test_compose_is_hydras_compose). A sweep, `+` of a key that is not a group, `~`, a
    package, a `hydra.` key or ``hydra=True`` go through Hydra's full compose."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    groups = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()}  # the config groups (conf/<group>/)
    if hydra or any(o.is_sweep_override() or (o.is_add() and o.key_or_group not in groups) or o.is_delete()
                    or o.is_force_add() or o.package is not None or "/" in o.key_or_group
                    or o.key_or_group.split(".")[0] == "hydra" for o in parsed):
        return hydra_compose(*overrides, hydra=hydra)
    choices = tuple(o.input_line for o in parsed if o.key_or_group in groups)
    if choices not in _COMPOSED:
        _COMPOSED[choices] = hydra_compose(*choices)
    cfg = copy.deepcopy(_COMPOSED[choices])
    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o.key_or_group not in groups], cfg)
    return cfg


def job_in_process(job_dir, *overrides) -> tuple[int, str]:
    """run.py's ``job`` on ``compose(*overrides)``, writing into ``job_dir``, in this process: (exit code, stderr).
    An exception from the job's code is raised as is (``pytest --pdb`` stops in it)."""
    import run

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = run.job(compose(*overrides), str(job_dir), "test")
    return code, err.getvalue()


@contextlib.contextmanager
def _environ(env: dict | None):
    """os.environ as ``env`` (a full environment, as subprocess's env=) for the duration."""
    if env is None:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({k: str(v) for k, v in env.items() if v is not None})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _as_a_fresh_command():
    """What a command's process would not carry over from earlier tests in this one, restored after: the logging
    setup Hydra makes per job (root handlers writing to this call's captured stderr/stdout, a run.log file), Hydra's
    global state, the signal handlers."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    main = threading.current_thread() is threading.main_thread()  # (only there can handlers be set)
    signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)} if main else {}
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        for s, h in signals.items():
            signal.signal(s, h)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None


@contextlib.contextmanager
def _each_sweep_job_composed_once():
    """Hydra's basic sweeper composes each job of a batch to check it (``validate_batch_is_legal``, which drops the
    config), then its launcher composes the job again, with the same arguments, to run it (~0.15 s each on 2 cores).
    Here the second call of ``load_sweep_config`` with the same master config and overrides gets a copy of what the
    first composed, made before anyone could change it; every other call composes as Hydra does."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    load = ConfigLoaderImpl.load_sweep_config
    composed: dict = {}

    def load_sweep_config(self, master_config, sweep_overrides):
        key = (id(self), id(master_config), tuple(sweep_overrides))
        if key in composed:
            return composed.pop(key)
        cfg = load(self, master_config, sweep_overrides)
        composed[key] = copy.deepcopy(cfg)
        return cfg

    ConfigLoaderImpl.load_sweep_config = load_sweep_config
    try:
        yield
    finally:
        ConfigLoaderImpl.load_sweep_config = load


class _Tee(io.StringIO):
    """Kept for the test (``getvalue()``) and passed on to the stream it replaces: pytest's capture (shown with a
    failing test's report) or, under `pytest -s`, the terminal, where a breakpoint() in the job's code talks."""

    def __init__(self, stream):
        super().__init__()
        self._stream = stream

    def write(self, text):
        self._stream.write(text)
        return super().write(text)

    def flush(self):
        self._stream.flush()


def cli(*args, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python run.py <args>` run in this process, in ``cwd``, with ``env`` as its environment if given."""
    import run

    # Hydra looks for conf/ next to the file of a task function defined in __main__, as with `python run.py`
    run.main.__wrapped__.__module__ = "__main__"
    escaped: list[BaseException] = []
    job = run.job

    @functools.wraps(job)
    def job_that_reports(*a, **kw):  # Hydra would print the traceback and exit 1: the test should see it raised
        try:
            return job(*a, **kw)
        except Exception as err:
            escaped.append(err)
            raise

    from moee_exp.faults import run_id

    run_id.cache_clear()  # a new command, a new id in its default dir (random per process)
    argv = ["run.py", *map(str, args)]
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    code = 0
    here = os.getcwd()
    saved_argv = sys.argv
    with _environ(env), _as_a_fresh_command(), _each_sweep_job_composed_once():
        os.chdir(cwd)
        sys.argv = argv
        run.job = job_that_reports
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                run.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if stop.code is not None and not isinstance(stop.code, int):
                err.write(f"{stop.code}\n")
        finally:
            run.job = job
            sys.argv = saved_argv
            os.chdir(here)
    if escaped:
        raise escaped[0]
    return subprocess.CompletedProcess(["python", "run.py", *argv[1:]], code, out.getvalue(), err.getvalue())


def error_lines(out) -> list[str]:
    """The `error:` lines of a stderr: a string, or a finished command (its ``.stderr``)."""
    text = out if isinstance(out, str) else out.stderr
    return [line for line in text.splitlines() if line.startswith("error:")]


def job_dirs(base: Path) -> list[Path]:
    """The job dirs under ``base`` that hold results (each has Hydra's .hydra/config.yaml)."""
    return sorted(p.parent for p in base.glob("**/config.yaml") if (p.parent / "results").exists())


# ------------------------------------------------------------------------------------------ real processes


def process(cmd, *, cwd=None, env=None, timeout=600, check=False, preexec=None) -> subprocess.CompletedProcess:
    """A real process: subprocess.run with its output captured as text and stdin closed."""
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, preexec_fn=preexec)
    if check:
        done.check_returncode()
    return done


def start(cmd, *, cwd, env=None, preexec=None) -> subprocess.Popen:
    """A real process left running (to signal or kill it): its stdout and stderr go to files in ``cwd``
    (``output(proc)`` reads them), so that a chatty job never blocks on a full pipe."""
    out, err = Path(cwd) / f"stdout-{os.getpid()}-{id(cmd)}", Path(cwd) / f"stderr-{os.getpid()}-{id(cmd)}"
    with open(out, "w") as out_file, open(err, "w") as err_file:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out_file,
                                stderr=err_file, preexec_fn=preexec)
    proc.output_files = (out, err)
    return proc


def output(proc: subprocess.Popen) -> tuple[str, str]:
    """(stdout, stderr) so far of a process from ``start``."""
    return tuple(p.read_text(errors="replace") for p in proc.output_files)


def run_py(*args) -> list[str]:
    """The argv of `python run.py <args>` for a real process."""
    return [sys.executable, str(ROOT / "run.py"), *map(str, args)]


@contextlib.contextmanager
def file_size_limit(kib: int):
    """RLIMIT_FSIZE at ``kib`` KiB on this process (every thread) for the duration, the kernel's own limit: a write
    past it fails with EFBIG (Python ignores SIGXFSZ, which would otherwise kill). Run only the code under test
    inside: its output to a StringIO (``job_in_process``), not to pytest's capture files, which the limit binds too."""
    import resource

    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN, "SIGXFSZ would kill this process at the limit"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def preexec_file_size_limit(kib: int):
    """For ``process(..., preexec=...)``: the new process starts with RLIMIT_FSIZE at ``kib`` KiB, every file it
    writes bound by it (where a limit that small would also bind pytest's capture files, as file_size_limit would).
    SIGXFSZ stays ignored: inherited from this Python, and set so again by the new one at its start."""
    import resource

    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))

    return preexec


CAPABILITIES = {"dac_override": 1, "dac_read_search": 2, "fowner": 3}  # linux/capability.h


def _drop_capabilities(caps: tuple[int, ...]) -> None:
    """The calling thread (and whatever it starts) loses ``caps`` from its bounding, effective, permitted and
    inheritable sets, for good."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in caps:
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), f"cannot drop capability {cap} from the bounding set")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, the calling thread
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2 words
    keep = ~sum(1 << cap for cap in caps) & 0xFFFFFFFF
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0], data[1], data[2] = data[0] & keep, data[1] & keep, data[2] & keep
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def unprivileged(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with file permissions binding it, as they bind a user who is not root: run in a thread
    of its own which, as root, drops the capabilities that override file modes (bounding, effective, permitted and
    inheritable sets, as `setpriv --bounding-set -dac_override,...` would; capabilities are per thread on Linux, so
    the rest of this process keeps them). The permitted set matters too: access(2) checks it for root. Returns what
    ``fn`` returns; raises what it raises (its traceback included: `pytest --pdb` stops in it)."""
    outcome: dict = {}

    def target():
        try:
            if os.geteuid() == 0:
                _drop_capabilities(tuple(CAPABILITIES.values()))
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 handed to the calling thread
            outcome["error"] = err

    thread = threading.Thread(target=target, name="unprivileged")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# -------------------------------------------------------------------------------------------------- W&B


def wandb_inspect(job_dir: Path, *flags) -> str:
    """`wandb leet inspect <flags> --json` on the job's offline run: W&B's own reader of the .wandb log (the wandb-core
    binary that command runs; no Python interpreter)."""
    from wandb.cli.leet import _get_local_launch_args, _resolve_path
    from wandb.util import get_core_path

    (run_dir,) = Path(job_dir).glob("wandb/offline-run-*")
    where = _get_local_launch_args(_resolve_path(str(run_dir)))
    cmd = [get_core_path(), "leet", "inspect", "--no-observability", *flags, "--json", *where]
    return process(cmd, check=True, timeout=120).stdout


def wandb_summary(job_dir: Path) -> dict:
    """{"state", "config", "summary", ...} of the job's offline W&B run."""
    return json.loads(wandb_inspect(job_dir, "--summary"))


def wandb_records(job_dir: Path) -> list[dict]:
    return [json.loads(line) for line in wandb_inspect(job_dir).splitlines() if line.startswith("{")]


# A process that hangs on its job's 2nd dataset (first attempt only: a marker file), after writing its pid to the
# marker: a test then signals or inspects that pid. A sitecustomize module, so that it also runs in a submitit job's
# or a joblib worker's own process (they inherit PYTHONPATH). Processes that run no dataset are left alone, so they
# do not import mteb (seconds each): submitit's controller, and the resource trackers multiprocessing and joblib
# start (`python -c ...`).
STALL = """
import os, pathlib, sys, time
marker = os.environ.get("MOEE_TEST_STALL_MARKER")
job = "submitit.local._local" not in sys.orig_argv and "-c" not in sys.orig_argv
if marker and job and not pathlib.Path(marker).exists():
    import mteb

    _evaluate, _calls = mteb.evaluate, []

    def evaluate(*args, **kwargs):
        _calls.append(1)
        if len(_calls) == 2 and not pathlib.Path(marker).exists():
            pathlib.Path(marker).write_text(str(os.getpid()))
            time.sleep(600)
        return _evaluate(*args, **kwargs)

    mteb.evaluate = evaluate
"""


def stalling_env(tmp_path, env: dict) -> tuple[dict, Path]:
    """``env`` with the STALL sitecustomize first on PYTHONPATH, and the marker file the stalled process writes."""
    site = Path(tmp_path) / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(STALL)
    marker = Path(tmp_path) / "in_flight"
    path = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path, "MOEE_TEST_STALL_MARKER": str(marker)}, marker
