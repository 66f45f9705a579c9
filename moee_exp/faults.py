"""What a shared cluster does to a job, turned into one line each: a write that fails (full disk, quota, file-size
limit, read-only or unwritable dir) and preemption (SIGTERM, SIGUSR1; under submitit, its checkpoint / requeue).

Results are written atomically (moee_exp.jobs.record.atomic_write) and rows are reused by identity (moee_exp.jobs.resume),
so a job stopped by any of these keeps its finished datasets and the same command resumes it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import WriteError

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
    """Raised in the job's main thread by SIGTERM / SIGUSR1 (BaseException: no `except Exception` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


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
    what is finished. Only in the main thread (signal handlers cannot be set elsewhere)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    requeue = _submitit_handler()

    def handler(signum, frame):
        for s in PREEMPTION_SIGNALS:  # one stop: a repeated signal does not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        if requeue is not None:
            log.warning("%s: checkpointing for submitit, which requeues this job", signal.Signals(signum).name)
            requeue(signum, frame)  # raises SystemExit (requeued) or submitit's UncompletedJobError
        raise Preempted(signum)

    previous = {s: signal.signal(s, handler) for s in PREEMPTION_SIGNALS}
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
