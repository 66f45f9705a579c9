"""`python run.py ...` (or `python -c` / `-m`) as a real process that skips the interpreter's start and its ~6 s of
third-party imports: it is forked from a server that imported them once per test worker (multiprocessing's
forkserver). The child has its own pid, argv, cwd, environment, stdout/stderr and exit code
(-N when killed by signal N), imports our code itself, runs the script as __main__, and exits as Python does:
non-daemon threads joined, then atexit handlers.

What a fork cannot give falls back to a fresh interpreter (subprocess), decided from the environment asked for:
a variable that a library reads when it is imported (HF_*, MTEB_*, PYTHONHASHSEED, ...) differs from the server's, or
a PYTHONPATH entry shadows a module the server imported or would import. A PYTHONPATH `sitecustomize` is imported by
the child, as site.py does at start-up. `fresh=True` forces a fresh interpreter: for tests of start-up itself.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def _torch_version_file() -> str:
    """torch/version.py's text, read without importing torch (the test process imports it later)."""
    spec = importlib.util.find_spec("torch")
    path = Path(spec.origin).with_name("version.py") if spec and spec.origin else None
    return path.read_text() if path and path.exists() else ""


# Read when a library is imported, so a forked child cannot change them (the server imported with its own values).
IMPORT_TIME = ("PYTHON", "HF_", "HUGGINGFACE", "TRANSFORMERS_", "MTEB_", "TORCH", "CUDA", "LD_", "MPLBACKEND",
               "TOKENIZERS", "MKL_", "OPENBLAS_", "NUMEXPR", "HOME", "XDG_")
HANDLED = {"PYTHONUNBUFFERED", "PYTHONPATH", "OMP_NUM_THREADS"}  # the child applies these itself
# set in this process by a library at run time (torch's inductor names its cache dir), read by nothing we run
HARMLESS = {"TORCHINDUCTOR_CACHE_DIR"}
# Matched by a prefix above but read only when called: huggingface_hub.get_token() reads HF_TOKEN each time
CALL_TIME = {"HF_TOKEN"}

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
]
if re.search(r"^cuda\b.*= None$", _torch_version_file(), re.MULTILINE):  # on a CUDA build its import initialises CUDA
    MODULES.append("bitsandbytes")  # model.quantization=4bit (protocol=paper) checks it is importable

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(MODULES)  # imported by name in the server (a missing optional one is skipped)
_SERVER_ENV = dict(os.environ)  # the environment the server starts with (the first child starts it)
_FRESH_PATH: list[str] = []  # sys.path of a fresh interpreter, without its first entry (the script's dir)


def _fresh_path() -> list[str]:
    if not _FRESH_PATH:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        code = "import json, sys; print(json.dumps(sys.path[1:]))"
        _FRESH_PATH.extend(json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                                     text=True, check=True).stdout))
    return _FRESH_PATH


def _forkable(cmd, env: dict) -> bool:
    if not (len(cmd) >= 2 and cmd[0] == sys.executable and (cmd[1] in ("-c", "-m") or cmd[1].endswith(".py"))):
        return False
    if cmd[1] in ("-c", "-m") and len(cmd) < 3:
        return False
    changed = {k for k in set(env) | set(_SERVER_ENV) if env.get(k) != _SERVER_ENV.get(k)}
    if any(k.startswith(IMPORT_TIME) and k not in HANDLED | HARMLESS | CALL_TIME for k in changed):
        return False
    # a PYTHONPATH entry is put on the child's sys.path: one that shadows a module (e.g. a stand-in package for an
    # installed one) needs a fresh interpreter, since the server may have imported the real one
    ours = {str(Path(s).resolve()) for s in sys.path if s}
    for entry in filter(None, env.get("PYTHONPATH", "").split(os.pathsep)):
        if str(Path(entry).resolve()) not in ours and not all(map(_new_name, _top_level_names(entry))):
            return False
    return True


def _top_level_names(entry: str) -> set[str]:
    path = Path(entry)
    if not path.is_dir():
        return {"?"}  # a zip or a file: not inspected
    return {p.name.split(".")[0] for p in path.iterdir() if p.suffix in (".py", ".pth", ".so") or p.is_dir()}


def _new_name(name: str) -> bool:
    """A module name nothing else provides, or the start-up hook the child imports as site.py would."""
    if name == "sitecustomize":
        return "sitecustomize" not in sys.modules  # this interpreter ran none of its own (nor did the server)
    return name.isidentifier() and name not in sys.modules and importlib.util.find_spec(name) is None


_LOCK = threading.Lock()


def _ensure_server() -> None:
    """Start the server (once) with the environment this module was imported with (conftest's), not whatever a
    test has monkeypatched when it first starts a process: the server's imports read it once for all children."""
    from multiprocessing import forkserver

    with _LOCK:
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(_SERVER_ENV)
            forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)


def file_size_limit(kib: int):
    """A `preexec` for Process/run: RLIMIT_FSIZE at ``kib`` KiB, SIGXFSZ ignored (a write past it raises EFBIG)."""
    return functools.partial(_limit_file_size, kib)


def _limit_file_size(kib: int) -> None:
    import resource
    import signal

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


def _child(cmd, cwd, env, out_path, err_path, path, preexec):  # runs in the forked process
    import atexit
    import runpy
    import threading
    import traceback

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, name in ((1, out_path), (2, err_path)):
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    if env.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    if preexec is not None:
        preexec()
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
    raise SystemExit(code)


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


class Process:
    """The part of subprocess.Popen the tests use (stdout/stderr are read at the end, as text)."""

    def __init__(self, cmd, *, cwd=None, env=None, fresh=False, preexec=None):
        cmd = [str(c) for c in cmd]
        self.args = cmd
        env = dict(os.environ if env is None else env)
        cwd = str(cwd or os.getcwd())
        self._tmp = tempfile.mkdtemp(prefix="proc-", dir=os.environ.get("MOEE_TEST_TMP"))  # conftest's run dir
        self._out, self._err = os.path.join(self._tmp, "out"), os.path.join(self._tmp, "err")
        self.forked = not fresh and _forkable(cmd, env)
        if self.forked:
            # sys.path as a fresh interpreter would have it: PYTHONPATH, then the defaults
            path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p] + _fresh_path()
            _ensure_server()
            self._proc = _CTX.Process(target=_child, args=(cmd, cwd, env, self._out, self._err, path, preexec),
                                      daemon=False)
            self._proc.start()
        else:
            with open(self._out, "w") as out, open(self._err, "w") as err:
                self._proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err,
                                              stdin=subprocess.DEVNULL, preexec_fn=preexec)
        self.pid = self._proc.pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            code = self._proc.exitcode if self.forked else self._proc.poll()
            self.returncode = code
        return self.returncode

    def wait(self, timeout=None):
        if self.forked:
            self._proc.join(timeout)
            if self._proc.exitcode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
        else:
            self._proc.wait(timeout)
        return self.poll()

    def send_signal(self, signum):
        os.kill(self.pid, signum)

    def kill(self):
        self._proc.kill()

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
