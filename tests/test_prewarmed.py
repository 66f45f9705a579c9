"""tests/prewarmed.py, the harness that runs `python run.py ...` for the other tests: a forked child behaves as the
fresh process it stands for, and what a fork cannot give goes to a fresh interpreter."""

import os
import signal
import sys
import time

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
    ({"HOME": "{home}", "HF_TOKEN": "hf_x"}, True),  # read when called (see the scan below)
    ({"PYTHONPATH": "{site}"}, True),  # a dir with a sitecustomize: the child runs it, as site.py does
    ({"PYTHONPATH": "{shadow}"}, False),  # a stand-in for an installed module: the server may hold the real one
])
def test_what_a_fork_cannot_give_runs_in_a_fresh_interpreter(tmp_path, extra, forked):
    site, shadow = tmp_path / "site", tmp_path / "shadow"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['MOEE_PROBE'] = 'site ran'\n")
    (shadow / "yaml").mkdir(parents=True)
    (shadow / "yaml" / "__init__.py").write_text("raise ImportError('No module named yaml')\n")
    paths = {"site": site, "shadow": shadow, "home": tmp_path}
    env = {**os.environ, **{k: v.format(**paths) for k, v in extra.items()}}
    code = "import os, sys; print(os.environ.get('MOEE_PROBE'), sys.flags.hash_randomization)"
    proc = prewarmed.Process([sys.executable, "-c", code], cwd=tmp_path, env=env)
    assert proc.forked == forked and proc.wait(120) == 0
    out, err = proc.output()
    assert err == ""
    if extra.get("PYTHONPATH") == "{site}":
        assert out.split()[0] == "site"
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


SCAN = """
import importlib, json, os, site, sys, warnings
from pathlib import PurePath

warnings.simplefilter("ignore")
marks = [os.path.basename(os.environ["HOME"]), os.environ["HF_TOKEN"]]
for name in MODULES:
    try:
        importlib.import_module(name)
    except ImportError:
        pass

# Every str/Path reachable from a module's globals: through plain containers, class attributes and (two levels of)
# instance attributes; each object visited once (packages re-export the same objects many times).
skip = {"os", "posix", "__main__", "__mp_main__", "linecache"}  # the environment, this script's own text
todo = [(value, f"{modname}.{key}", 0) for modname, module in list(sys.modules.items()) if modname not in skip
        for key, value in list(getattr(module, "__dict__", {}).items())]
seen, texts = set(), []
while todo:
    value, where, depth = todo.pop()
    if isinstance(value, (str, PurePath)):
        texts.append((str(value), where))
        continue
    if id(value) in seen or depth > 3:
        continue
    seen.add(id(value))
    kind = type(value)
    if kind in (list, tuple, set, frozenset):
        todo.extend((item, where, depth + 1) for item in list(value)[:200])
    elif kind is dict:
        todo.extend((item, f"{where}[{str(key)[:30]}]", depth + 1) for key, item in list(value.items())[:500])
    elif isinstance(value, type):
        if depth == 0:
            todo.extend((item, f"{where}.{key}", 2) for key, item in list(vars(value).items())[:200])
    elif depth < 2 and not callable(value) and kind.__name__ != "module":
        try:
            attrs = object.__getattribute__(value, "__dict__")
        except Exception:
            continue
        todo.extend((item, f"{where}.{key}", depth + 1) for key, item in list(attrs.items())[:200])
hits = sorted({where for text, where in texts if any(mark in text for mark in marks)})
print(json.dumps({"user_site": site.ENABLE_USER_SITE, "hits": hits}))
"""


def test_no_preloaded_library_keeps_home_or_the_hf_token_from_its_import(tmp_path):
    """What CALL_TIME rests on: with conftest's environment (HF_HOME, MTEB_CACHE, FSSPEC_CONFIG_DIR set), a fresh
    interpreter that imports every preloaded module keeps no value made from HOME or HF_TOKEN, bar user site-packages
    (off in a venv) and the fallbacks for an unset HF_HOME and FSSPEC_CONFIG_DIR."""
    import json

    home = tmp_path / "HOME-MARK-7f3a"
    env = {**os.environ, "HOME": str(home), "HF_TOKEN": "hf_TOKEN-MARK-7f3a"}
    code = f"MODULES = {prewarmed.MODULES!r}\n{SCAN}"
    proc = prewarmed.run([sys.executable, "-c", code], cwd=tmp_path, env=env, fresh=True, check=True)
    found = json.loads(proc.stdout.splitlines()[-1])
    assert not found["user_site"]
    assert {"site.USER_BASE", "site.USER_SITE"} <= set(found["hits"])  # the scan sees values made at import
    fallbacks = {"huggingface_hub.constants.default_home", "fsspec.config.default_conf_dir"}
    assert set(found["hits"]) - {"site.USER_BASE", "site.USER_SITE"} - fallbacks == set()
