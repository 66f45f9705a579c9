"""The README is a test: every command in its ```bash blocks (and in docs/) runs here, in order, as written, with one
rule for what this machine lacks (no hub, no GPU, no cluster) — `STAND_IN`, stated in the README's "Every command
here is tested":

- a hub model becomes the tiny random model of the same task set (`model=tiny`), the data generated data of each
  task's schema at the smallest size (`tasks.data=synthetic tasks.synthetic.size=small`), one dataset per task type;
- a sweep (`-m`) runs its first job (the first value of each swept key), with Hydra's basic launcher in place of
  SLURM / submitit / joblib, into `hydra.sweep.dir` when the command names one;
- W&B-online commands get `--dry-run`; `export`ed paths are the suite's own temp dirs.

The command line itself is parsed by the same parser the command uses (Hydra's for run.py, argparse for the
tools), so a command that would not parse fails here even where the stand-in rule changes what it runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT
from jobs import compose

pytestmark = pytest.mark.xdist_group("test_readme")
# the README, then its docs pages in the order its Docs table lists them (a later page's command may read what an
# earlier one wrote: the dashboard reads the sweep dir docs/cluster.md's commands make), then any page it does not list
_LISTED = list(dict.fromkeys(re.findall(r"\(docs/([\w-]+\.md)\)", (ROOT / "README.md").read_text(encoding="utf-8"))))
DOCS = [ROOT / "README.md", *[ROOT / "docs" / n for n in _LISTED if (ROOT / "docs" / n).exists()],
        *sorted(p for p in (ROOT / "docs").glob("**/*.md") if p.name not in _LISTED)]
# What a command needs that this machine has not: appended (Hydra: a later value wins) / swapped, as stated above.
STAND_IN = ("tasks.data=synthetic", "tasks.synthetic.size=small", "logger=none", "progress=false")
HANDLED_ELSEWHERE = {  # the README's first commands, run by .ci/run itself and by tests/test_run.py::test_default_job
    "bash scripts/setup.sh": "CI runs it (.ci/run)",
    ".venv/bin/python -m pytest": "the suite itself",
}


def commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line, argv) of every command in ```bash blocks, continuation lines joined, comments dropped, shell variables
    set in the block (`S="..."`, `export X=...`) substituted."""
    out, block, start, env = [], None, 0, {}
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```bash"):
            block, env = [], {}
        elif line.strip().startswith("```") and block is not None:
            block = None
        elif block is not None and line.strip():
            start = i + 1
            while line.endswith("\\"):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "export" or (argv and re.fullmatch(r"\w+=.*", argv[0]) and len(argv) == 1):
                key, _, value = argv[-1].partition("=")
                env[key] = value
            elif argv:
                expanded = []
                for arg in argv:
                    if re.fullmatch(r"\$\w+", arg) and arg[1:] in env:
                        expanded += shlex.split(env[arg[1:]])
                    else:
                        expanded.append(arg)
                out.append((start, expanded))
        i += 1
    return out


# the hub checkpoints of conf/model/: a tool's --model naming one gets the tiny model
HUB_IDS = {m.group(1) for p in (ROOT / "conf/model").glob("*.yaml")
           if (m := re.search(r"^name_or_path: (\S+)", p.read_text(), re.M))}
def _unique(found):
    """Each distinct command once (the README repeats some of docs/'s), at its first place."""
    seen, out = set(), []
    for where, argv in found:
        if tuple(argv) not in seen:
            seen.add(tuple(argv))
            out.append((where, argv))
    return out


ALL = _unique([(f"{p.relative_to(ROOT)}:{line}", argv) for p in DOCS for line, argv in commands(p)])


def test_the_readme_has_the_commands_this_test_knows():
    """Every command is one of the kinds below: a new kind of command must be taught to this test, not skipped."""
    assert len(ALL) > 20
    for where, argv in ALL:
        assert kind(argv), f"{where}: {' '.join(argv)}"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    command = "bash scripts/setup.sh test && .venv/bin/python -m pytest -q"
    assert command in readme and command in ci


def piped(argv: list[str]) -> tuple[list[str], str | None]:
    """`cat FILE | command` → (command, FILE): the file is the command's standard input."""
    if "|" in argv and argv[0] == "cat" and argv.index("|") == 2:
        return argv[3:], argv[1]
    return argv, None


def kind(argv: list[str]) -> str | None:
    argv, _ = piped(argv)
    text = " ".join(argv)
    if any(text.startswith(k) for k in HANDLED_ELSEWHERE):
        return "elsewhere"
    args = argv[1:] if argv[0].endswith("python") else None
    if args is None:
        return None
    if args[0] == "run.py":
        return "run"
    if args[:2] == ["-m", "analysis.report"]:
        return "report"
    if args[:2] in (["-m", "moee_exp.integrations.embed"], ["-m", "moee_exp.integrations.dashboard"]):
        return args[1].rsplit(".", 1)[1]
    return None


# --------------------------------------------------------------------------------------------- run.py commands


def first_job(overrides: list[str]) -> tuple[list[str], str | None]:
    """The overrides of a sweep's first job, the basic launcher's, and the job dir the command names (or None)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out, sweep_dir = [], None
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element()
        if key == "hydra/launcher" or key.startswith("hydra.launcher."):
            continue  # SLURM / submitit / joblib: the jobs are the same with the basic launcher
        if key in ("hydra.sweep.dir", "hydra.run.dir"):
            sweep_dir = o.value() + ("/0" if key == "hydra.sweep.dir" else "")
            continue
        if o.is_sweep_override():
            first = next(iter(o.sweep_string_iterator()))
            out.append(f"{key}={first}")
        else:
            out.append(o.input_line)
    return out, sweep_dir


def stand_in(overrides: list[str]) -> list[str]:
    """STAND_IN applied: a hub model → the tiny model, keeping the task set the command would run."""
    import yaml

    from moee_exp.scoring.demo_tasks import DEMO_TASKS

    written = compose(*overrides, hydra=True)
    task_set = written.hydra.runtime.choices["tasks@_global_.tasks"] if "tasks@_global_.tasks" in \
        written.hydra.runtime.choices else written.hydra.runtime.choices.get("tasks")
    model = written.hydra.runtime.choices.get("model")
    spec = yaml.safe_load((ROOT / "conf/model" / f"{model}.yaml").read_text())
    swapped = [] if spec.get("tiny") else ["model=tiny", f"tasks={task_set}"]
    # generated data stands in for hub datasets; the bundled demo tasks run on their own data
    data = [] if set(written.tasks.names) <= set(DEMO_TASKS) else list(STAND_IN[:2])
    return [o for o in overrides if not (swapped and o.split("=")[0] == "model")] + swapped + data + list(STAND_IN[2:])


def one_per_type(cfg) -> None:
    from omegaconf import open_dict

    from moee_exp.scoring.tasks import get_tasks

    seen, names = set(), []
    for name, task in zip(cfg.tasks.names, get_tasks(cfg.tasks.names)):
        kind_ = task.metadata.type
        if kind_ not in seen:
            seen.add(kind_)
            names.append(name)
    with open_dict(cfg):
        cfg.tasks.names = names


def run_command(args: list[str], cwd: Path, where: str) -> int:
    """run.py's own parser on the command line, then its first job in-process (run.job: the command's own path)."""
    from hydra._internal.utils import get_args_parser

    import run

    parsed = get_args_parser().parse_args(args)  # exits (argparse) on a command line run.py would refuse
    overrides, sweep_dir = first_job(parsed.overrides)
    overrides = stand_in(overrides)
    cfg = compose(*overrides)
    one_per_type(cfg)
    default = f"multirun/{where}/0" if parsed.multirun else f"outputs/{where}"  # as Hydra's: a new dir per command
    job_dir = cwd / (sweep_dir or default.replace(":", "_").replace(".md", ""))
    return run.job(cfg, str(job_dir), "readme")


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


@pytest.mark.parametrize("where,argv", [c for c in ALL if kind(c[1]) not in (None, "elsewhere")],
                         ids=[f"{w} {' '.join(a)[:70]}" for w, a in ALL if kind(a) not in (None, "elsewhere")])
def test_command_runs_as_written(where, argv, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    what = kind(argv)
    argv, stdin = piped(argv)
    args = argv[1:]
    if stdin:
        import io
        import sys

        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(stdin).read_bytes())))
    if what == "run":
        assert run_command(args[1:], cwd, where) == 0, f"{where}: {' '.join(argv)}"
    elif what == "report":
        from analysis import report

        assert report.main(args[2:]) == 0
    elif what == "embed":
        from moee_exp.integrations import embed

        tool = [a if a not in HUB_IDS else "tiny" for a in args[2:]]
        for i, a in enumerate(tool[:-1]):
            if a == "--input" and not Path(tool[i + 1]).exists():
                Path(tool[i + 1]).write_text("a first text\nand a second one\n")
        assert embed.main(tool) == 0
    elif what == "dashboard":
        from moee_exp.integrations import dashboard

        tool = args[2:] + ([] if "--dry-run" in args else ["--dry-run"])
        assert dashboard.main(tool) == 0



def test_readme_python_runs_as_written(tmp_path, monkeypatch):
    """The README's Python block, run as written (it names the tiny model: nothing to stand in for)."""
    monkeypatch.chdir(tmp_path)
    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102  the README's own code
    assert scope["emb"].shape == (2, scope["feats"]["hs"].shape[1] + scope["feats"]["rw"][0].size)
