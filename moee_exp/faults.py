"""What a shared cluster does to a job, turned into one line each: a write that fails (full disk, quota, file-size
limit, read-only or unwritable dir), preemption (SIGTERM, SIGUSR1; under submitit, its checkpoint / requeue), Ctrl-C
(SIGINT), a second job into a dir in use (``hold_job_dir``) and a signal to a joblib sweep (``stop_sweep_on_signal``).

Results are written atomically (moee_exp.files.atomic_write) and rows are reused by identity (moee_exp.jobs.resume),
so a job stopped by any of these keeps its finished datasets and the same command resumes it.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
import signal
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, WriteError

try:
    import fcntl
except ImportError:  # Windows: no job-dir lock
    fcntl = None

log = logging.getLogger(__name__)

SPACE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
         errno.EFBIG: "the file-size limit (ulimit -f) is reached"}
DENIED = {errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EROFS: "read-only filesystem",
          errno.ENOTDIR: "a part of the path is a file, not a dir"}


def as_os_error(err: BaseException) -> OSError | None:
    """``err`` as an OSError: itself, or one rebuilt from a library's wrapped OS error (safetensors' Rust writer
    raises SafetensorError("... File too large (os error 27)"))."""
    if isinstance(err, OSError):
        return err
    m = re.search(r"\(os error (\d+)\)", str(err))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1)))) if m else None


def is_write_fault(err: BaseException, space_only: bool = False) -> bool:
    """A write that failed for lack of space (disk, quota, file-size limit), or (unless space_only) of permission."""
    err = as_os_error(err)
    return err is not None and err.errno in (SPACE if space_only else {**SPACE, **DENIED})


def write_error(path, err: BaseException, key: str = "hydra.run.dir (hydra.sweep.dir for -m)") -> WriteError:
    """A WriteError naming ``path``, what went wrong and the fix (``key``: the setting that moves the path)."""
    err = as_os_error(err)
    path = err.filename or path
    if err.errno in SPACE:
        fix = f"free space or raise the limit, or point {key} at another filesystem"
        what = SPACE[err.errno]
    else:
        fix = f"point {key} at a writable dir"
        what = DENIED.get(err.errno, err.strerror or err.__class__.__name__)
    return WriteError(err.errno, f"cannot write {path}: {what}; {fix}. Finished datasets are kept: the same "
                                 "command resumes")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------------- preemption


class Preempted(BaseException):
    """Raised in the job's main thread by SIGTERM / SIGUSR1 / SIGINT (Ctrl-C) (BaseException: no `except Exception`
    swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        name = signal.Signals(self.signum).name
        return f"{name} (Ctrl-C)" if self.signum == signal.SIGINT else name


PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STOP_SIGNALS = (*PREEMPTION_SIGNALS, signal.SIGINT)  # Ctrl-C stops a job as cleanly as a preemption (never requeued)


def _submitit_handler():
    """submitit's checkpoint-and-requeue handler when this process is a submitit job (SLURM or local), else None."""
    if "submitit" not in sys.modules or not any(k.startswith(("SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"))
                                               for k in os.environ):
        return None
    try:
        from submitit import JobEnvironment

        handler = signal.getsignal(JobEnvironment._usr_sig())
    except Exception:  # noqa: BLE001  not inside a submitit job after all
        return None
    return handler if callable(handler) and getattr(handler, "__name__", "") == "checkpoint_and_try_requeue" else None


@contextmanager
def preemptible():
    """While the job runs, SIGTERM and SIGUSR1 stop it cleanly: outside submitit they raise Preempted; inside a
    submitit job they go to submitit's own checkpoint-and-requeue handler (as its USR2 does), which requeues the job
    (hydra-submitit-launcher's launcher is checkpointable) and exits. Either way the finally blocks of the job write
    what is finished. SIGINT (Ctrl-C) raises Preempted too (never a requeue). Only in the main thread (signal
    handlers cannot be set elsewhere)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    requeue = _submitit_handler()

    def handler(signum, frame):
        for s in STOP_SIGNALS:  # one stop: a repeated signal (a second Ctrl-C) does not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        if requeue is not None and signum != signal.SIGINT:
            log.warning("%s: checkpointing for submitit, which requeues this job", signal.Signals(signum).name)
            requeue(signum, frame)  # raises SystemExit (requeued) or submitit's UncompletedJobError
        raise Preempted(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def resume_hint(job_dir: Path) -> str:
    """The command-line setting that points a rerun at this job's dir."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return f"hydra.sweep.dir={HydraConfig.get().sweep.dir}"
    except Exception:  # noqa: BLE001
        pass
    return f"hydra.run.dir={job_dir}"


# ------------------------------------------------------------------------------------------------ one writer per dir

JOB_LOCK = ".job.lock"
RUN_ID_RESOLVER = "moee.run_id"


@functools.lru_cache(maxsize=1)
def run_id() -> str:
    """A short id, random and fixed for the life of this process: conf/config.yaml puts it after the time in the
    default run and sweep dirs (``${now:%H-%M-%S}-${moee.run_id:}``), so two commands started in the same second
    (on one machine or two sharing a filesystem) never share a dir."""
    return uuid.uuid4().hex[:6]


def register_run_id_resolver() -> None:
    """``${moee.run_id:}`` for the configs. Registered when this module is imported, so that a sweep's worker
    processes (joblib, submitit), which import it to run a job, can resolve the dirs their parent chose."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RUN_ID_RESOLVER):
        OmegaConf.register_new_resolver(RUN_ID_RESOLVER, run_id, use_cache=True)


def lock_holder(path: Path) -> dict:
    """What the holder of a lock file wrote about itself ({} if nothing readable)."""
    try:
        info = json.loads(Path(path).read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def describe_holder(info: dict) -> str:
    return (f"{info.get('host')} pid {info.get('pid')}, started {info.get('since')}" if info.get("pid")
            else "a job that did not say who it is")


def holder_is_gone(info: dict) -> bool:
    """A holder that wrote its pid on this host and whose pid no longer exists (killed, e.g. with kill -9)."""
    pid = info.get("pid")
    return info.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid)


def _lock_info() -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}).encode()


@contextmanager
def hold_job_dir(job_dir: Path, key: str = "hydra.run.dir"):
    """One writer per job dir: while a job runs, it holds ``<job_dir>/.job.lock`` (``fcntl.flock``, with its host,
    pid and start time written in it). A second job into the same dir is refused at once with one line naming the
    holder (ConfigError). The kernel drops the flock when its holder dies (kill -9 included), so a killed job never
    blocks the dir; a flock that outlives its holder's pid on this host (a child that inherited the descriptor, a
    network filesystem's lock manager) is taken over."""
    if fcntl is None:
        yield
        return
    job_dir = Path(job_dir)
    path = job_dir / JOB_LOCK
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")  # noqa: SIM115 (closed below: closing releases the lock)
    except OSError as err:
        if is_write_fault(err):
            raise write_error(job_dir, err, key) from None
        raise
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = lock_holder(path)
            if not holder_is_gone(info):
                raise ConfigError(
                    f"{job_dir} is in use by another job ({describe_holder(info)}): one job writes into a dir at a "
                    f"time; wait for it to end, or run into another dir ({key}=...)"
                ) from None
            log.warning("%s was held by %s, which is gone: taking it over", path, describe_holder(info))
        except OSError as err:  # a filesystem without flock: no lock, as before
            log.warning("no lock on %s (%s): make sure no other job writes into this dir", job_dir, err)
        try:
            f.seek(0)
            f.truncate()
            f.write(_lock_info())
            f.flush()
        except OSError:
            pass
        yield
    finally:
        f.close()


def job_dir_in_use(path: Path) -> bool:
    """Whether a job holds the job-dir lock file ``path`` right now (a held flock whose holder is alive)."""
    if fcntl is None:
        return False
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return not holder_is_gone(lock_holder(path))
            return False
    except OSError:
        return False


# -------------------------------------------------------------------------------------------------- stopping a sweep

SWEEP_PID_ENV = "MOEE_SWEEP_PID"  # set by a sweep's parent (run.py): its worker processes know who stops them
SWEEP_STOP_WAIT_S = 120.0  # how long a stopped sweep waits for its jobs to write their finished rows


def in_sweep_worker() -> bool:
    """Whether this process is a worker of a sweep whose parent (run.py, joblib launcher) prints the resume line."""
    return os.environ.get(SWEEP_PID_ENV) == str(os.getppid()) and str(os.getpid()) != os.environ.get(SWEEP_PID_ENV)


def _children() -> list[int]:
    """The pids of this process's children (Linux /proc; [] elsewhere)."""
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm)": state, ppid, ...
        if len(fields) > 1 and fields[1] == str(me):
            found.append(int(entry))
    return found


_SWEEP: dict = {}  # the sweep this process launches (note_sweep): its dir and its launcher


def note_sweep(sweep_dir, launcher_target) -> None:
    """Called by the sweep's first callback (moee_exp.jobs.preflight) in the process that launches it: a signal to
    this process then stops that sweep (stop_sweep_on_signal). Hydra's own HydraConfig is set only inside a job."""
    _SWEEP.update(dir=Path(str(sweep_dir)), launcher=str(launcher_target or ""))


def _sweep():
    """(sweep dir, whether its jobs run in worker processes) of the sweep this process launches under a launcher
    whose jobs run on this machine (the basic or the joblib launcher), else None (a single run, or submitit / SLURM,
    whose jobs are stopped by their own scheduler)."""
    target = _SWEEP.get("launcher", "")
    if not _SWEEP or not any(k in target for k in ("joblib", "BasicLauncher")):
        return None
    return _SWEEP["dir"], "joblib" in target


def _keep_loky_from_killing_workers() -> None:
    """When one worker exits, loky's executor kills the others (SIGKILL), which would cut short the clean-up of a
    job that is writing its finished rows: a stopping sweep ends its workers itself, once they are done."""
    try:
        from joblib.externals.loky.process_executor import _ExecutorManagerThread

        _ExecutorManagerThread.kill_workers = lambda self, reason="": None
    except Exception:  # noqa: BLE001  another joblib: its workers may be ended early; finished rows are on disk
        pass


def _held_by(sweep: Path) -> list[int]:
    """The pids of the jobs that hold a job dir of ``sweep`` now."""
    if not sweep.is_dir():
        return []
    return [int(lock_holder(p).get("pid") or 0) for p in sweep.glob("**/" + JOB_LOCK) if job_dir_in_use(p)]


def stop_sweep_on_signal() -> None:
    """In a sweep's parent process (run.py), SIGTERM / SIGUSR1 / SIGINT stop the whole sweep: under the joblib launcher
    the signal is passed on to the workers that run a job (each stops it as ``preemptible`` does, keeping the finished
    datasets, and exits); the parent waits (at most SWEEP_STOP_WAIT_S) until no job of the sweep holds its dir, ends
    the workers left, prints one line saying how to resume and exits with 128 + the signal. A job running in this
    process (the basic launcher) has its own handler (``preemptible``) while it runs. Outside such a sweep (a single
    run, submitit / SLURM) the signal does what it does by default."""
    os.environ[SWEEP_PID_ENV] = str(os.getpid())

    def handler(signum, frame):
        found = _sweep()
        if found is None:  # not a sweep this process runs: as if no handler were set
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        sweep, workers = found
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        if workers:
            _keep_loky_from_killing_workers()
            ours, told = set(_children()), set()
            deadline = time.monotonic() + SWEEP_STOP_WAIT_S
            while time.monotonic() < deadline:
                held = [pid for pid in _held_by(sweep) if pid in ours]
                if not held:
                    break
                for pid in set(held) - told:  # each running job once (a second signal would be ignored anyway)
                    with _suppress_os_error():
                        os.kill(pid, signum)
                    told.add(pid)
                time.sleep(0.2)
            for pid in _children():  # idle workers, and any job still running after the wait
                with _suppress_os_error():
                    os.kill(pid, signal.SIGKILL)
        print(f"stopped by {Preempted(signum).name}: the sweep's jobs keep their finished datasets in {sweep}/<job>/"
              f"results; run the same command with hydra.sweep.dir={sweep} to resume", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(128 + signum)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)


@contextmanager
def _suppress_os_error():
    try:
        yield
    except OSError:
        pass


register_run_id_resolver()
