"""tests/prewarmed.py, the harness that runs `python run.py ...` for the other tests: a forked child behaves as the
fresh process it stands for, and what a fork cannot give goes to a fresh interpreter."""

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import prewarmed
import pytest

CHILD = """
import atexit, os, sys, threading, time
print("argv", sys.argv[1:], "cwd", os.getcwd(), "env", os.environ.get("MOEE_PROBE"), "pid", os.getpid())
print("path0", sys.path[0], "tests on path", any(p.endswith("tests") for p in sys.path))
print("moee_exp imported", "moee_exp" in sys.modules, file=sys.stderr)
threading.Thread(target=lambda: (time.sleep(0.3), print("thread joined"))).start()
atexit.register(lambda: print("atexit ran"))
sys.exit(int(sys.argv[1]))
"""


def test_a_forked_child_is_the_process_it_stands_for(tmp_path):
    env = {**os.environ, "MOEE_PROBE": "probe"}
    proc = prewarmed.run([sys.executable, "-c", CHILD, "3", "x y"], cwd=tmp_path, env=env)
    assert proc.returncode == 3
    lines = proc.stdout.splitlines()
    assert lines[0] == f"argv ['3', 'x y'] cwd {tmp_path} env probe pid {lines[0].split()[-1]}"
    assert int(lines[0].split()[-1]) != os.getpid()
    assert lines[1] == "path0  tests on path False"  # sys.path as `python -c` has it, not pytest's
    assert lines[2:] == ["thread joined", "atexit ran"]  # non-daemon threads, then atexit, as the interpreter ends
    assert proc.stderr == "moee_exp imported False\n"  # our code is imported by the child, never preloaded


def test_uncaught_exception_and_signals(tmp_path):
    proc = prewarmed.run([sys.executable, "-c", "raise ValueError('boom')"], cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("Traceback") and "ValueError: boom" in proc.stderr
    child = prewarmed.Process([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                              cwd=tmp_path)
    assert child.forked
    deadline = time.monotonic() + 60
    while not (os.path.exists(child._out) and "up" in open(child._out).read()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL  # as subprocess.Popen reports it


@pytest.mark.parametrize(("extra", "forked"), [
    ({"PYTHONUNBUFFERED": "1", "WANDB_MODE": "online", "OMP_NUM_THREADS": "1"}, True),
    ({"HF_HOME": "/elsewhere"}, False),  # huggingface_hub reads it at import: the server's value would leak
    ({"PYTHONHASHSEED": "0"}, False),
    ({"HOME": "{home}"}, False),  # libraries make cache paths from it at import
    ({"HF_TOKEN": "hf_probe"}, True),  # huggingface_hub reads it when called (below: the child sees its own)
    ({"CUDA_VISIBLE_DEVICES": ""}, True),  # read when CUDA initialises (submitit sets it for each job)
    ({"PYTHONPATH": "{site}"}, True),  # a dir with a sitecustomize: the child runs it, as site.py does
    ({"PYTHONPATH": "{shadow}"}, False),  # a stand-in for an installed module: the server may hold the real one
])
def test_what_a_fork_cannot_give_runs_in_a_fresh_interpreter(tmp_path, extra, forked):
    site, shadow = tmp_path / "site", tmp_path / "shadow"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['MOEE_PROBE'] = 'site ran'\n")
    (shadow / "sklearn").mkdir(parents=True)
    (shadow / "sklearn" / "__init__.py").write_text("raise ImportError('No module named sklearn')\n")
    paths = {"site": site, "shadow": shadow, "home": tmp_path}
    env = {**os.environ, **{k: v.format(**paths) for k, v in extra.items()}}
    code = ("import os, sys, huggingface_hub; "
            "print(os.environ.get('MOEE_PROBE'), huggingface_hub.get_token(), sys.flags.hash_randomization)")
    proc = prewarmed.Process([sys.executable, "-c", code], cwd=tmp_path, env=env)
    assert proc.forked == forked and proc.wait(120) == 0
    out, err = proc.output()
    assert err == ""
    if extra.get("PYTHONPATH") == "{site}":
        assert out.split()[0] == "site"
    if "HF_TOKEN" in extra:
        assert out.split()[-2] == "hf_probe"
    if "PYTHONHASHSEED" in extra:
        assert out.split()[-1] == "0"


def test_preexec_applies_in_the_child(tmp_path):
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_FSIZE)[0])"
    proc = prewarmed.run([sys.executable, "-c", code], cwd=tmp_path, preexec=prewarmed.file_size_limit(6))
    assert proc.stdout.strip() == str(6 * 1024)


@pytest.mark.skipif(os.geteuid() != 0, reason="file permissions bind a non-root process anyway")
def test_without_capabilities_root_is_bound_by_file_permissions(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code = f"open({str(locked / 'x')!r}, 'w')"
    assert prewarmed.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0  # root: permissions overridden
    (locked / "x").unlink()
    drop = prewarmed.without_capabilities("dac_override", "dac_read_search", "fowner")
    for fresh in (False, True):
        proc = prewarmed.run([sys.executable, "-c", code], cwd=tmp_path, preexec=drop, fresh=fresh)
        assert proc.returncode == 1 and "PermissionError" in proc.stderr, proc.stderr



def test_interpreter_options_a_child_applies_itself_fork_and_others_run_fresh(tmp_path):
    code = "import sys; print(sys.dont_write_bytecode, sys.stdout.write_through)"
    proc = prewarmed.Process([sys.executable, "-u", "-B", "-c", code], cwd=tmp_path)
    assert proc.forked and proc.wait(60) == 0 and proc.output()[0].split() == ["True", "True"]
    proc = prewarmed.Process([sys.executable, "-X", "dev", "-c", code], cwd=tmp_path)
    assert not proc.forked and proc.wait(60) == 0


# A submitit job's process, as the job starts: a SIGUSR2 handler (submitit's requeue signal) that exits with 7, then
# what it was forked with.
JOB_SITE = """
import os, signal, sys, time
if "submitit.core._submit" in sys.orig_argv:
    signal.signal(signal.SIGUSR2, lambda *_: os._exit(7))
    print("job", os.getpid(), "torch preloaded", "torch" in sys.modules, flush=True)
    time.sleep(60)
    os._exit(1)
"""
STARTER = """
import os, signal, subprocess, sys, time
def job():
    proc = subprocess.Popen([sys.executable, "-u", "-m", "submitit.core._submit", "nowhere"], stdout=subprocess.PIPE,
                            text=True)
    _, pid, *_, preloaded = proc.stdout.readline().split()
    return proc, int(pid), preloaded
proc, pid, preloaded = job()
print("forked", pid != proc.pid, preloaded)
proc.send_signal(signal.SIGUSR2)  # to the launcher, which passes it on
print("exit", proc.wait())
proc, pid, _ = job()
proc.kill()  # SIGKILL: the launcher cannot pass it on; the server kills the job
print("launcher", proc.wait())
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print("job gone")
        break
    time.sleep(0.05)
other = subprocess.run([sys.executable, "-c", "import os, sys; print(os.getpid(), 'torch' in sys.modules)"],
                       capture_output=True, text=True)
print("other", other.stdout.split()[1])
"""


def test_a_submitit_job_a_child_starts_forks_too_and_its_launcher_stands_for_it(tmp_path):
    """The child's sys.executable forks a submitit job from the server (torch already imported), passes signals on,
    exits as the job does and takes it down when killed; anything else it starts is a fresh interpreter."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(JOB_SITE)
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = prewarmed.run([sys.executable, "-c", STARTER], cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["forked True True", "exit 7", f"launcher {-signal.SIGKILL}", "job gone",
                                        "other False"]


def test_this_xdist_worker_was_forked_from_the_run_server(request):
    """conftest's xdist hook made the workers' python the launcher: this worker is a child of the server."""
    if not hasattr(request.config, "workerinput"):
        pytest.skip("not an xdist worker (the README's command always runs some)")
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    assert any(b"prewarmed.serve" in arg for arg in parent), parent
    assert sys.executable == str(prewarmed.LAUNCHER)
    assert Path(os.environ["MOEE_TEST_TMP"]) == prewarmed.LAUNCHER.parent  # the run dir the master chose


REQUEST_AS_ANOTHER_USER = """
import pickle, socket, struct
payload = pickle.dumps({{"argv": ["nope"], "cwd": "/", "env": {{}}, "fds": [], "preexec": None}})
sock = socket.socket(socket.AF_UNIX)
sock.connect("\\0" + {name!r})
try:
    sock.sendall(struct.pack("q", len(payload)) + payload)
    print(sock.recv(1).decode() or "refused")
except OSError:  # closed before the request was read
    print("refused")
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("python3", path="/usr/bin:/bin"),
                    reason="needs root and a system python3, to connect as another user")
def test_another_users_process_gets_no_fork():
    """The server's socket is an abstract one (no file permissions): it answers only this user's processes."""
    import subprocess

    prewarmed.ensure_server()
    ask = [shutil.which("python3", path="/usr/bin:/bin"), "-c", REQUEST_AS_ANOTHER_USER.format(name=prewarmed._NAME)]
    mine = subprocess.run(ask, capture_output=True, text=True, timeout=60, check=False)
    assert mine.stdout.strip() == "N", mine.stderr  # answered: not a python to fork, run it yourself
    other = subprocess.run(ask, capture_output=True, text=True, timeout=60, check=False,
                           preexec_fn=lambda: os.setuid(65534))
    assert other.stdout.strip() == "refused", other.stderr  # nobody's request: the connection is closed unread
