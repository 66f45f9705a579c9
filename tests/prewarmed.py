"""`python run.py ...` (or `python -c` / `-m`) as a real process that skips the interpreter's start and its ~6 s of
third-party imports: it is forked from a server that imported them once per test run, shared by the xdist workers.
The child has its own pid, argv, cwd, environment, file descriptors and exit code (-N when killed by signal N),
imports our code itself, runs the script as __main__, and exits as Python does: non-daemon threads joined, then
atexit handlers.

A submitit job that such a child starts with `sys.executable` forks from the same server too, and so do the xdist
workers (conftest makes their python the launcher): the child's `sys.executable` is a small launcher
(tests/prewarmed_python.py) that hands its argv, environment and open file descriptors to the server, passes on the
signals it receives, and exits as the forked process does. Killing the launcher (even with SIGKILL) kills that
process. Whatever else is started with the launcher is the real interpreter (exec: it keeps its pid).

What a fork cannot give falls back to a fresh interpreter (subprocess, or the launcher execs the real one), decided
by the server from the environment asked for: a variable that a library reads when it is imported (HF_*, MTEB_*,
PYTHONHASHSEED, ...) differs from the server's, an interpreter option other than -u / -B, or a PYTHONPATH entry
that holds a module the server imported. A PYTHONPATH `sitecustomize` is imported by the child, as site.py does at
start-up. `fresh=True` forces a fresh interpreter: for tests of start-up itself.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import os
import pickle
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from prewarmed_python import (  # the launcher's side of the same protocol
    HEADER,
    recv_exact,
    send_request,
    split_options,
)


def _torch_version_file() -> str:
    """torch/version.py's text, read without importing torch (the test process imports it later)."""
    spec = importlib.util.find_spec("torch")
    path = Path(spec.origin).with_name("version.py") if spec and spec.origin else None
    return path.read_text() if path and path.exists() else ""


# Read when a library is imported, so a forked child cannot change them (the server imported with its own values).
IMPORT_TIME = ("PYTHON", "HF_", "HUGGINGFACE", "TRANSFORMERS_", "MTEB_", "TORCH", "CUDA", "LD_", "MPLBACKEND",
               "TOKENIZERS", "MKL_", "OPENBLAS_", "NUMEXPR", "HOME", "XDG_")
HANDLED = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "OMP_NUM_THREADS"}  # the child applies these
# set in this process by a library at run time (torch's inductor names its cache dir), read by nothing we run
HARMLESS = {"TORCHINDUCTOR_CACHE_DIR"}
# Matched by a prefix above but read only when called: huggingface_hub.get_token() reads HF_TOKEN each time, and
# CUDA reads CUDA_VISIBLE_DEVICES when it initialises, which the server never does (submitit sets it for each job)
CALL_TIME = {"HF_TOKEN", "CUDA_VISIBLE_DEVICES"}

# The third-party libraries a run.py process spends its first seconds importing; nothing of ours (moee_exp, run.py):
# each child imports those itself, as a fresh process does, so their import-time code sees the child's environment.
# Importing these starts no thread and touches no device, so forking after them is safe.
MODULES = [
    "numpy", "pandas", "scipy.stats", "sklearn.linear_model", "sklearn.cluster", "sklearn.metrics", "yaml",
    "omegaconf", "hydra", "hydra.core.plugins", "hydra._internal.utils", "hydra_plugins", "joblib", "cloudpickle",
    "torch", "safetensors.torch", "tokenizers", "tqdm", "datasets", "pyarrow", "polars",
    "transformers", "transformers.modeling_utils", "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto", "transformers.models.olmoe.modeling_olmoe",
    "transformers.models.qwen2_moe.modeling_qwen2_moe", "transformers.models.mixtral.modeling_mixtral",
    "transformers.models.qwen3_moe.modeling_qwen3_moe", "transformers.models.deepseek_v3.modeling_deepseek_v3",
    "transformers.models.llama.modeling_llama",
    "mteb", "mteb.get_tasks", "mteb.deprecated_evaluator", "pytrec_eval", "sentence_transformers",
    "wandb", "wandb.sdk", "wandb.sdk.launch",  # wandb.init imports its launch package (~1.5 s)
    "submitit", "submitit.core._submit",  # a submitit job (tests/prewarmed_python.py)
]
if re.search(r"^cuda\b.*= None$", _torch_version_file(), re.MULTILINE):  # on a CUDA build its import initialises CUDA
    MODULES.append("bitsandbytes")  # model.quantization=4bit (protocol=paper) checks it is importable

_SERVER_ENV = dict(os.environ)  # the environment the server starts with (conftest's, whatever a test patches later)
# One server per test run: the run dir (conftest's) is shared by the xdist workers.
_RUN_DIR = Path(os.environ.get("MOEE_TEST_TMP") or tempfile.mkdtemp(prefix="prewarmed-"))
_NAME = "moee-prewarmed-" + hashlib.sha1(str(_RUN_DIR).encode()).hexdigest()[:16]  # an abstract unix socket
LAUNCHER = _RUN_DIR / "python"  # the forked children's sys.executable
_LOCK = threading.Lock()
_READY: list[bool] = []


# ------------------------------------------------------------------------------------------------- the client side

def _connect() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect("\0" + _NAME)
    except OSError:
        sock.close()
        raise
    return sock


def ensure_server(env: dict | None = None, owner: int | None = None) -> None:
    """Start the run's server (once, whichever process asks first: conftest's xdist hook before the workers exist,
    else the first worker to fork) with ``env`` or the environment this module was imported with (conftest's, not
    whatever a test has monkeypatched): the server's imports read it once for all children. It serves until
    ``owner`` is gone: the pytest process that started the workers (or this one, without xdist)."""
    with _LOCK:
        if _READY:
            return
        with open(_RUN_DIR / "prewarmed.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                _connect().close()  # already up (it binds first, then imports: a request waits for the imports)
            except OSError:
                if owner is None:
                    owner = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()
                _start_server(dict(_SERVER_ENV if env is None else env), owner)
        _READY.append(True)


def _start_server(env: dict, owner: int) -> None:
    here = Path(__file__).resolve().parent
    LAUNCHER.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -IS "
                        f"{shlex.quote(str(here / 'prewarmed_python.py'))} {_NAME} {shlex.quote(sys.executable)} "
                        '"$@"\n')
    LAUNCHER.chmod(0o755)
    code = "import sys; sys.path.insert(0, sys.argv[1]); import prewarmed; prewarmed.serve(int(sys.argv[2]))"
    env.pop("PYTHONPATH", None)  # its sys.path is a fresh interpreter's
    with open(_RUN_DIR / "prewarmed.log", "ab") as log:
        server = subprocess.Popen([sys.executable, "-c", code, str(here), str(owner)], env=env,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while True:
        try:
            _connect().close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                log_text = (_RUN_DIR / "prewarmed.log").read_text(errors="replace")
                raise RuntimeError(f"the prewarmed server did not start:\n{log_text[-3000:]}") from None
            time.sleep(0.02)


def file_size_limit(kib: int):
    """A `preexec` for Process/run: RLIMIT_FSIZE at ``kib`` KiB, SIGXFSZ ignored (a write past it raises EFBIG)."""
    return functools.partial(_limit_file_size, kib)


def _limit_file_size(kib: int) -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))


CAPABILITIES = {"dac_override": 1, "dac_read_search": 2, "fowner": 3}  # linux/capability.h


def without_capabilities(*names: str):
    """A `preexec` that does what `setpriv --bounding-set -dac_override,...` does for root: the named capabilities
    leave the bounding, effective, permitted and inheritable sets, so file permissions bind the process (and any
    process it starts)."""
    return functools.partial(_drop_capabilities, tuple(CAPABILITIES[n] for n in names))


def _drop_capabilities(caps: tuple[int, ...]) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in caps:
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), f"cannot drop capability {cap} from the bounding set")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2 words
    keep = ~sum(1 << cap for cap in caps) & 0xFFFFFFFF
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0], data[1], data[2] = data[0] & keep, data[1] & keep, data[2] & keep
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


class Process:
    """The part of subprocess.Popen the tests use (stdout/stderr are read at the end, as text)."""

    def __init__(self, cmd, *, cwd=None, env=None, fresh=False, preexec=None):
        cmd = [str(c) for c in cmd]
        self.args = cmd
        env = dict(os.environ if env is None else env)
        cwd = str(cwd or os.getcwd())
        self._tmp = tempfile.mkdtemp(prefix="proc-", dir=os.environ.get("MOEE_TEST_TMP"))  # conftest's run dir
        self._out, self._err = os.path.join(self._tmp, "out"), os.path.join(self._tmp, "err")
        self._conn = None if fresh else self._fork(cmd, cwd, env, preexec)
        self.forked = self._conn is not None
        if not self.forked:
            with open(self._out, "w") as out, open(self._err, "w") as err:
                self._proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err,
                                              stdin=subprocess.DEVNULL, preexec_fn=preexec)
            self.pid = self._proc.pid
        self.returncode = None

    def _fork(self, cmd, cwd, env, preexec) -> socket.socket | None:
        """Ask the server to fork the process (its pid is kept); None where it must be a fresh interpreter."""
        ensure_server()
        fds = [os.open(os.devnull, os.O_RDONLY)] + [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                                                    for p in (self._out, self._err)]
        try:
            sock = _connect()
            request = {"argv": cmd, "cwd": cwd, "env": env, "fds": [0, 1, 2],
                       "preexec": None if preexec is None else pickle.dumps(preexec)}
            send_request(sock, request, fds)
            if recv_exact(sock, 1) != b"F":
                sock.close()
                return None
            self.pid = HEADER.unpack(recv_exact(sock, HEADER.size))[0]
            return sock
        finally:
            for fd in fds:
                os.close(fd)

    def poll(self):
        if self.returncode is None:
            self.returncode = self._status(0) if self.forked else self._proc.poll()
        return self.returncode

    def _status(self, timeout):
        """The forked child's exit code, once the server has reaped it; None if it still runs after ``timeout``."""
        self._conn.settimeout(timeout)
        try:
            code = HEADER.unpack(recv_exact(self._conn, HEADER.size))[0]
        except (TimeoutError, BlockingIOError):
            return None
        self._conn.close()
        return code

    def wait(self, timeout=None):
        if self.forked:
            if self.poll() is None:
                self.returncode = self._status(timeout)
                if self.returncode is None:
                    raise subprocess.TimeoutExpired(self.args, timeout)
        else:
            self._proc.wait(timeout)
        return self.poll()

    def send_signal(self, signum):
        os.kill(self.pid, signum)

    def kill(self):
        if not self.forked:
            self._proc.kill()
        elif self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) as text; empty where the process died before writing any."""
        read = [Path(p).read_text(errors="replace") if Path(p).exists() else "" for p in (self._out, self._err)]
        shutil.rmtree(self._tmp, ignore_errors=True)
        return read[0], read[1]


def run(cmd, *, cwd=None, env=None, timeout=600, fresh=False, check=False,
        preexec=None) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True, stdin=DEVNULL), forked where it can be (see above)."""
    proc = Process(cmd, cwd=cwd, env=env, fresh=fresh, preexec=preexec)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    out, err = proc.output()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done


# ------------------------------------------------------------------------------------------------- the server side

def serve(owner: int) -> None:
    """Bind, import MODULES, then fork a child per forkable request until ``owner`` is gone. Each request's
    connection gets b"F" and the child's pid, and later its exit code; b"N" where a fresh interpreter is needed.
    A connection closed before its child ends kills the child."""
    defaults = sys.path[2:]  # a fresh interpreter's sys.path after its first entry (this is tests/, then `-c`'s '')
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + _NAME)
    listener.listen(128)
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional one that is not installed
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
    children: dict[int, socket.socket] = {}
    killed: set[int] = set()
    while _alive(owner):
        watched = [c for pid, c in children.items() if pid not in killed]
        for ready in select.select([listener, wake_r, *watched], [], [], 1.0)[0]:
            if ready is listener:
                _serve_one(listener, children, defaults, (listener.fileno(), wake_r, wake_w))
            elif ready == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
            else:  # the client hung up (a launcher killed, a test gone): its child goes too
                pid = next(p for p, c in children.items() if c is ready)
                killed.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        _reap(children, killed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap(children: dict, killed: set) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        killed.discard(pid)
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(HEADER.pack(os.waitstatus_to_exitcode(status)))
            except OSError:
                pass
            conn.close()


def _serve_one(listener, children: dict, defaults: list[str], own_fds: tuple[int, ...]) -> None:
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        # an abstract socket has no file permissions: only this user's processes may ask for a fork
        _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.getuid():
            raise ConnectionError
        conn.settimeout(30)
        header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 253)
        if len(header) < HEADER.size:  # a client checking that the server is up
            raise ConnectionError
        request = pickle.loads(recv_exact(conn, HEADER.unpack(header)[0]))
        if not _forkable(request["argv"], request["env"]):
            conn.sendall(b"N")
            raise ConnectionError
        conn.settimeout(None)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for fd in (*own_fds, *(c.fileno() for c in children.values()), conn.fileno()):
                    os.close(fd)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _place_fds(fds, request["fds"])
                code = _child(request, defaults)
            except BaseException:  # noqa: BLE001 a failure before the script ran: as a crashed start-up
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        conn.sendall(b"F" + HEADER.pack(pid))
        children[pid] = conn
    except Exception:  # noqa: BLE001 another user, a probe, a bad request: refused, and the server goes on serving
        conn.close()
    finally:
        for fd in fds:
            os.close(fd)


def _forkable(cmd, env: dict) -> bool:
    rest = split_options(cmd[1:])[1]
    python = cmd[0] in (sys.executable, str(LAUNCHER))  # (a forked xdist worker's sys.executable is the launcher)
    if not (python and rest and (rest[0] in ("-c", "-m") or rest[0].endswith(".py"))):
        return False
    if rest[0] in ("-c", "-m") and len(rest) < 2:
        return False
    changed = {k for k in set(env) | set(_SERVER_ENV) if env.get(k) != _SERVER_ENV.get(k)}
    if any(k.startswith(IMPORT_TIME) and k not in HANDLED | HARMLESS | CALL_TIME for k in changed):
        return False
    # a PYTHONPATH entry goes first on the child's sys.path: one that holds a module this server imported (e.g. a
    # stand-in for an installed package) needs a fresh interpreter, which would import it from there
    return all(_adds_only_new_modules(entry) for entry in filter(None, env.get("PYTHONPATH", "").split(os.pathsep)))


def _adds_only_new_modules(entry: str) -> bool:
    path = Path(entry)
    if not path.is_dir():
        return False  # a zip or a file: not inspected
    names = {p.name.split(".")[0] for p in path.iterdir() if p.suffix in (".py", ".pth", ".so") or p.is_dir()}
    return not names & set(sys.modules)  # (a `sitecustomize` there is new: the server ran none, the child runs it)


def _place_fds(received: list[int], targets: list[int]) -> None:
    """Give the child the client's file descriptors at the numbers they had there (stdio, an xdist worker's pipes)."""
    base = max([*received, *targets, 2]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, base) for fd in received]
    for fd in received:
        os.close(fd)
    received.clear()  # (closed: the caller's cleanup must not close them again)
    for src, dst in zip(moved, targets):
        os.dup2(src, dst)
    for src in moved:
        os.close(src)


def _child(request: dict, defaults: list[str]) -> int:  # runs in the forked process; returns its exit code
    import atexit
    import runpy
    import traceback

    argv, cwd, env = request["argv"], request["cwd"], request["env"]
    options, rest = split_options(argv[1:])
    cmd = [argv[0], *rest]
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "-u" in options or env.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    sys.dont_write_bytecode = "-B" in options or bool(env.get("PYTHONDONTWRITEBYTECODE"))
    sys.executable = str(LAUNCHER)  # what it starts with sys.executable forks from here too
    sys.orig_argv = list(argv)
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p] + defaults
    if request["preexec"] is not None:
        pickle.loads(request["preexec"])()
    if env.get("OMP_NUM_THREADS", "").isdigit() and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(env["OMP_NUM_THREADS"]))
    code = 0
    try:
        _sitecustomize(path)
        if cmd[1] == "-c":
            sys.argv = ["-c", *cmd[3:]]
            sys.path[:] = ["", *path]
            exec(compile(cmd[2], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif cmd[1] == "-m":
            sys.argv = [cmd[2], *cmd[3:]]
            sys.path[:] = [cwd, *path]
            runpy.run_module(cmd[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = cmd[1:]
            sys.path[:] = [str(Path(cmd[1]).resolve().parent), *path]
            runpy.run_path(cmd[1], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 what the interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    threading._shutdown()  # as the interpreter ends: non-daemon threads first, then atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _sitecustomize(path) -> None:
    """What site.py does at start-up, for a sitecustomize on PYTHONPATH (the server imported none)."""
    import importlib.machinery

    if importlib.machinery.PathFinder.find_spec("sitecustomize", path) is None:
        return
    sys.path[:] = list(path)
    try:
        import sitecustomize  # noqa: F401
    except Exception as err:  # noqa: BLE001 as site.execsitecustomize reports it
        print(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{type(err).__name__}: {err}",
              file=sys.stderr)
