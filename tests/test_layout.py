"""The package shows its pipeline and keeps it: floors that import only downward, user errors on the ground floor,
the config read once per job, and each public import path a real module (no aliases in sys.modules)."""

import ast
import functools
import importlib
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PKG = ROOT / "moee_exp"
# Floor of each part of the package: a module imports only from its own floor or lower ones.
FLOORS = {"errors": 0, "files": 0, "checks": 0, "faults": 0, "data": 0, "features": 1, "scoring": 2, "jobs": 3,
          "integrations": 4}
ALLOWED_UP: set = set()  # no import goes up the floors


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported moee_exp module, at function level?) for every import of ours in the file."""
    name, out = module_name(path), []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
        target = ".".join(p for p in (base, node.module or "") if p)
        if not target.startswith("moee_exp"):
            continue
        for alias in node.names:  # `from . import x` imports the module x
            full = f"{target}.{alias.name}"
            module = full if (ROOT / Path(*full.split("."))).with_suffix(".py").exists() or \
                (ROOT / Path(*full.split("."))).is_dir() else target
            out.append((module, node.col_offset > 0))
    return out


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS[parts[1]] if len(parts) > 1 and parts[1] in FLOORS else 5  # moee_exp/__init__


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}
STAGE_MODULES = {m: p for m, p in MODULES.items() if floor(m) < 5}


def test_imports_only_go_down_the_floors():
    up = sorted((m, t) for m, p in STAGE_MODULES.items() for t, _ in imports(p)
                if floor(t) > floor(m) and (m, t) not in ALLOWED_UP)
    assert not up, f"imports up the floors: {up}"


def test_no_import_circle_even_through_function_level_imports():
    edges = {m: {t for t, _ in imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in edges.get(m, ()):
            if state.get(t) == 1:
                raise AssertionError(f"import circle: {' -> '.join(path[path.index(t):] + [t])}")
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_function_level_imports_of_ours_are_the_lazy_ones():
    """A function-level import of our own modules exists only where importing at the top would cost every user of
    the module a heavy import (datasets; transformers' model registry; mteb's task classes, which the config checks
    must not wait for), never to dodge a circle."""
    lazy = sorted((m, t) for m, p in STAGE_MODULES.items() for t, fn in imports(p) if fn)
    assert lazy == [("moee_exp.features.loading", "moee_exp.features.models"),
                    ("moee_exp.features.loading", "moee_exp.features.models.deepseek_moe"),
                    ("moee_exp.jobs.preflight", "moee_exp.scoring.tasks"),
                    ("moee_exp.jobs.preflight", "moee_exp.scoring.tasks"),
                    ("moee_exp.scoring.spec", "moee_exp.features.featurize"),
                    ("moee_exp.scoring.spec", "moee_exp.scoring.encoder"),
                    ("moee_exp.scoring.tasks", "moee_exp.scoring.synthetic_tasks"),
                    ("moee_exp.scoring.weights", "moee_exp.scoring.demo_tasks"),
                    ("moee_exp.scoring.weights", "moee_exp.scoring.demo_tasks")]


def test_every_user_facing_exception_is_defined_on_the_ground_floor():
    from moee_exp.errors import USER_ERRORS, UnsupportedRouterError

    assert {e.__module__ for e in (*USER_ERRORS, UnsupportedRouterError)} == {"moee_exp.errors"}
    # a failed import of ours is a bug and keeps its traceback; a missing optional dependency a setting needs is
    # raised as MissingDependencyError, a ConfigError
    assert not issubclass(ModuleNotFoundError, USER_ERRORS)
    errors_imports = imports(PKG / "errors.py")
    assert not errors_imports, "errors.py imports nothing of ours: every stage can import it"
    assert {t for t, _ in imports(PKG / "files.py")} <= {"moee_exp.errors"}, "files.py: every stage can import it"


@pytest.mark.parametrize("sub", ["features", "scoring", "jobs", "integrations"])
def test_each_subpackage_says_what_enters_and_what_leaves(sub):
    doc = importlib.import_module(f"moee_exp.{sub}").__doc__ or ""
    assert "Enters:" in doc and ("Leaves:" in doc or "leaves" in doc.lower()), doc


def test_no_module_replaces_itself_in_sys_modules():
    """A public path is the module that defines its names: no module swaps itself for another at import."""
    swapping = sorted(m for m, p in MODULES.items() if "sys.modules[__name__]" in p.read_text())
    assert not swapping, swapping
    old_aliases = [n for n in ("embed", "st", "mteb_model", "dashboard", "api") if (PKG / f"{n}.py").exists()]
    assert not old_aliases, "the integrations' public paths are moee_exp.integrations.<name>"


def test_the_tools_are_not_in_the_installed_package():
    """devtools/ (the coverage table, checkpoint sizes, the public-code fixture) is imported from the repo root only:
    pyproject's package list names moee_exp alone, and no module of moee_exp imports devtools."""
    import tomllib

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["moee_exp*"]
    assert not [m for m, p in MODULES.items() if "devtools" in p.read_text()]


def test_python_m_embed_runs(monkeypatch, capsys):
    """`python -m moee_exp.integrations.embed --help`, as runpy runs a -m module (run as __main__, argv[0] its
    file)."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["moee_exp/integrations/embed.py", "--help"])
    monkeypatch.delitem(sys.modules, "moee_exp.integrations.embed", raising=False)  # as in a new interpreter
    with pytest.raises(SystemExit) as done:
        runpy.run_module("moee_exp.integrations.embed", run_name="__main__", alter_sys=True)
    out = capsys.readouterr()
    assert done.value.code in (0, None) and "--model" in out.out, out.err


def test_a_job_enters_the_config_module_once_and_climbs_up_at_most_three_times(tmp_path):
    """Follow one job through every Python call: the config module is entered once (read_job), and calls from a
    lower floor into a higher one (callbacks the runner hands down) are at most 3 distinct edges."""
    from jobs import compose

    from moee_exp.jobs.runner import run_job

    cfg = compose("tasks.names=[MoEEDemoSTS]", "logger=none", "progress=false", "predictions=[]",
                  f"paths.cache_dir={tmp_path / 'cache'}")
    run_job(cfg, tmp_path / "warm", "g")  # imports, the tiny model and the features: not what is followed
    config_file = str(PKG / "jobs" / "config.py")
    entries, climbs = [], set()

    @functools.lru_cache(maxsize=None)  # called on every Python call of the job: resolve each file once
    def module_of_file(filename: str) -> str | None:
        try:
            return module_name(Path(filename).resolve())
        except ValueError:
            return None

    def module_of(code) -> str | None:
        return module_of_file(code.co_filename)

    def profile(frame, event, arg):
        if event != "call" or frame.f_back is None:
            return
        callee, caller = module_of(frame.f_code), module_of(frame.f_back.f_code)
        if callee is None or caller is None or not caller.startswith("moee_exp") or not callee.startswith("moee_exp"):
            return
        # (a schema's own check, called by its base class in moee_exp.checks while read_job builds it, is part of
        # that one read)
        if frame.f_code.co_filename == config_file and frame.f_back.f_code.co_filename != config_file \
                and caller != "moee_exp.checks":
            entries.append(f"{caller} -> {frame.f_code.co_name}")
        if floor(callee) > floor(caller) and caller != "moee_exp.checks":  # (the base class calling a schema's check)
            climbs.add((caller, callee))

    sys.setprofile(profile)
    try:
        run_job(cfg, tmp_path / "followed", "g")
    finally:
        sys.setprofile(None)
    assert entries == ["moee_exp.jobs.runner -> read_job"], entries
    assert len(climbs) <= 3, sorted(climbs)


# What a fresh interpreter has imported at each step (nothing imported before: only a process shows it).
FRESH_IMPORTS = """
import json, sys
MODELING = {'transformers.modeling_utils', 'moee_exp.features.models', 'moee_exp.features.models.deepseek_moe'}
def seen(names):
    return sorted(set(names) & set(sys.modules))
import moee_exp.jobs.config
steps = {"config": seen({'mteb', 'datasets', 'wandb', *MODELING})}
import moee_exp.jobs.runner
steps["runner"] = seen(MODELING)
from moee_exp.features.loading import tiny_config
tiny_config({'model_type': 'olmoe'})
steps["olmoe config read"] = seen(MODELING)
tiny_config({'model_type': 'deepseek'})
steps["deepseek config read"] = seen(MODELING)
print(json.dumps(steps))
"""


def test_heavy_imports_wait_until_a_step_needs_them():
    """run.py reads and checks the config before the heavy imports (mteb, datasets, W&B): a config mistake is
    reported in seconds. Reading a config imports no model class: a model type we own (DeepSeekMoE) has its config
    registered then, and its model class (transformers' modeling stack, seconds) only when a model is built
    (tests/test_deepseek_moe.py loads one), so a job whose features are all cached never imports it."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", FRESH_IMPORTS], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "config": [], "runner": [], "olmoe config read": [], "deepseek config read": ["moee_exp.features.models"]}
