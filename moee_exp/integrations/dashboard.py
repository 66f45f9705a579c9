"""W&B report of a project's MoEE runs (wandb-workspaces): ``python -m moee_exp.integrations.dashboard ENTITY/PROJECT``.

What it holds (one section per model × prompt found in ``--from`` job dirs or given as ``--combo``; one section
over all runs when none is given):
- α curves: MoEE(sum) runs, x = ``weights.alpha`` from the run config, y = ``avg`` (the paper's Avg) and each task
  type's score ``type/<T>`` from the run summary (scatter with the running mean drawn through the points);
- task types: one bar chart per ``type/<T>`` and ``avg``, runs grouped by ``emb.kind`` (HS / RW / MoEE(concat) /
  MoEE(sum)); a group's bar is its best run, so MoEE(sum)'s is its best α (an oracle, as the paper's tuned α);
- per-dataset scores: the ``scores`` table every run logs (task type, task, main score), runs grouped by sweep
  (the run's W&B group: one per sweep dir), beside the runs table.

Building the report needs no network; saving it (the last step) does, and needs an API key: without them the
command stops with one ``error:`` line. ``--dry-run`` prints what would be saved instead.

The runner logs a *flat* config (``weights.alpha``, not ``weights: {alpha}``), which W&B stores as ``{"weights.alpha": {"value":
...}}``. wandb-workspaces writes nested-config paths (``emb.value.alpha``) for dotted keys, so the report rewrites
every config path it holds into the flat form (``weights.alpha.value``) before it is saved.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from ..scoring import kinds

TASK_TYPES = ("Classification", "Clustering", "PairClassification", "Reranking", "Retrieval", "STS", "Summarization")
SCORES_TABLE = "scores"  # the per-dataset table moee_exp.jobs.record.WandbLogger.log_summary logs
# config keys (flat, as the runner logs them) and summary keys the report reads
ALPHA, KIND, MODEL, PROMPT, DATA = "weights.alpha", "emb.kind", "model.name", "prompt.name", "tasks.data"
# dry runs (tasks.data=synthetic: generated data, scores that mean nothing) are left out of every panel unless asked:
# a "best run" bar must never be one of them
REAL_DATA = (DATA, "!=", "synthetic")
_NESTED_CONFIG_PATH = re.compile(r"(config[:.])([^\s\"'.]+)\.value((?:\.[^\s\"'.]+)+)")


def _flat_config_paths(text: str) -> str:
    """'config:emb.value.alpha' (nested form) -> 'config:emb.alpha.value' (how W&B stores a flat dotted key)."""
    return _NESTED_CONFIG_PATH.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}.value", text)


def _report_class():
    import wandb_workspaces.reports.v2 as wr

    class MoEEReport(wr.Report):
        """A report whose config paths address the runner's flat config keys (see the module docstring)."""

        def _to_model(self):
            model = super()._to_model()
            return type(model).model_validate(json.loads(_flat_config_paths(model.model_dump_json(by_alias=True, exclude_none=True))))

    return MoEEReport


def _filters(*conditions: tuple) -> str:
    """W&B filter expression: each condition (key, value) (equal) or (key, op, value)."""
    parts = []
    for cond in conditions:
        key, op, value = cond if len(cond) == 3 else (cond[0], "==", cond[1])
        parts.append(f"Config('{key}') {op} {json.dumps(value)}")
    return " and ".join(parts)


def build_report(
    entity: str,
    project: str,
    combos: Iterable[tuple[str, str]] = (),
    *,
    task_types: Iterable[str] = TASK_TYPES,
    title: str = "MoEE: alpha curves, task types, datasets",
    bind: bool = True,
    synthetic: bool = False,
):
    """The report (not saved). ``combos``: (model.name, prompt.name) pairs, one section each; none = one section
    over all runs. ``bind=False`` leaves the run sets unbound to the project, so the spec can be serialized offline.
    ``synthetic=False`` (default) leaves dry runs (tasks.data=synthetic) out of every run set."""
    import wandb_workspaces.reports.v2 as wr

    task_types = list(task_types)
    where = {"entity": entity, "project": project} if bind else {}
    scores = ["avg", *[f"type/{t}" for t in task_types]]
    combos = list(dict.fromkeys(combos)) or [None]

    def runset(name, *pairs, groupby=()):
        conditions = pairs if synthetic else (*pairs, REAL_DATA)
        return wr.Runset(name=name, filters=_filters(*conditions), groupby=list(groupby), **where)

    every = [kinds.get(name) for name in kinds.names()]  # the registered emb kinds (moee_exp.scoring.kinds)
    weighted = [k for k in every if k.weighted]  # those with an α curve
    blocks = [
        wr.P(
            "Scores are x100 (the paper's scale). avg = mean of the task-type averages (the paper's Avg); type/<T> = "
            "mean of that type's datasets. α curves: MoEE(sum) = cos(HS) + α cos(RW). "
            + ("Dry runs on generated data (tasks.data=synthetic) are included: their scores mean nothing. "
               if synthetic else "Dry runs on generated data (tasks.data=synthetic) are left out. ")
            + "Built by moee_exp.integrations.dashboard."
        )
    ]
    for combo in combos:
        label = "all models and prompts" if combo is None else f"{combo[0]} × {combo[1]}"
        same = () if combo is None else ((MODEL, combo[0]), (PROMPT, combo[1]))
        blocks += [
            wr.H2(f"α curves: {label}"),
            wr.PanelGrid(
                runsets=[runset(k.label, (KIND, k.name), *same) for k in weighted],
                panels=[
                    wr.ScatterPlot(title=f"{s} vs α", x=wr.Config(ALPHA), y=wr.SummaryMetric(s), running_ymean=True)
                    for s in scores
                ],
            ),
            wr.H2(f"Task types, {' / '.join(k.label for k in every)}: {label}"),
            wr.PanelGrid(
                runsets=[runset("emb kinds", *same)],
                panels=[
                    # "emb.kind.value": the flat config key as W&B stores it (wandb-workspaces passes it through)
                    wr.BarPlot(title=s, metrics=[wr.SummaryMetric(s)], groupby=f"{KIND}.value", groupby_aggfunc="max",
                               orientation="v")  # fmt: skip
                    for s in scores
                ],
            ),
        ]
    blocks += [
        wr.H2("Per-dataset scores, runs grouped by sweep"),
        wr.PanelGrid(
            runsets=[runset("by sweep", groupby=["group"])],
            panels=[wr.WeavePanelSummaryTable(table_name=SCORES_TABLE, layout=wr.Layout(w=24, h=12))],
        ),
    ]
    return _report_class()(entity=entity, project=project, title=title, description=__doc__.splitlines()[0],
                           blocks=blocks)  # fmt: skip


def report_spec(report) -> dict:
    """The report as W&B would store it (its viewspec), as a dict; offline for a report built with bind=False."""
    return json.loads(report._to_model().model_dump_json(by_alias=True, exclude_none=True))


def combos_from_dirs(dirs: Iterable[Path]) -> list[tuple[str, str]]:
    """(model.name, prompt.name) of every job under ``dirs`` (their resolved config.yaml), in order."""
    import yaml

    found = []
    for d in dirs:
        for path in sorted(Path(d).glob("**/config.yaml")):
            if ".hydra" in path.parts or not (path.parent / "results").is_dir():
                continue
            cfg = yaml.safe_load(path.read_text())
            found.append((cfg["model"]["name"], cfg["prompt"]["name"]))
    return list(dict.fromkeys(found))


def types_from_dirs(dirs: Iterable[Path]) -> list[str]:
    """The task types (in TASK_TYPES order) of the result rows under ``dirs``: a panel per type the runs log."""
    import json

    found = {json.loads(p.read_text()).get("task_type") for d in dirs for p in Path(d).glob("**/results/*.json")}
    return [t for t in TASK_TYPES if t in found]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m moee_exp.integrations.dashboard", description=__doc__.splitlines()[0])
    p.add_argument("project", help="ENTITY/PROJECT of the runs (logger.entity / logger.project)")
    p.add_argument("--from", dest="dirs", nargs="*", type=Path, default=[],
                   help="job or sweep dirs: one section per model x prompt found in their config.yaml")  # fmt: skip
    p.add_argument("--combo", action="append", default=[], metavar="MODEL:PROMPT", help="a section (repeatable)")
    p.add_argument("--types", nargs="*", default=None,
                   help="task types to plot (default: those of the results under --from, else all)")
    p.add_argument("--title", default="MoEE: alpha curves, task types, datasets")
    p.add_argument("--dry-run", action="store_true", help="print the sections instead of saving")
    p.add_argument("--with-synthetic", action="store_true",
                   help="also show dry runs on generated data (tasks.data=synthetic; left out by default)")
    args = p.parse_args(argv)
    entity, _, project = args.project.partition("/")
    if not entity or not project:
        print(f"error: {args.project!r} is not ENTITY/PROJECT (e.g. my-team/moee)", file=sys.stderr)
        return 2
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        print("error: the dashboard needs wandb-workspaces: pip install 'moee-exp[dashboard]'", file=sys.stderr)
        return 2
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: --from {' '.join(missing)}: no such dir (give job or sweep dirs of run.py)", file=sys.stderr)
        return 2
    combos = combos_from_dirs(args.dirs) + [tuple(c.split(":", 1)) for c in args.combo if ":" in c]
    if args.dirs and not combos_from_dirs(args.dirs):
        print(f"error: --from {' '.join(map(str, args.dirs))}: no job dir with results there (a job dir holds "
              "config.yaml and results/)", file=sys.stderr)
        return 2
    if args.types is None:
        args.types = (types_from_dirs(args.dirs) if args.dirs else []) or list(TASK_TYPES)
    if args.dry_run:
        report = build_report(entity, project, combos, task_types=args.types, title=args.title, bind=False,
                              synthetic=args.with_synthetic)
        for block in report.blocks:
            if hasattr(block, "panels"):
                names = [getattr(p, "title", None) or getattr(p, "table_name", "") for p in block.panels]
                print(f"  {type(block).__name__} (runs: {block.runsets[0].filters or 'all'}): {', '.join(names)}")
            else:
                print(f"{type(block).__name__}: {block.text}")
        return 0
    report = build_report(entity, project, combos, task_types=args.types, title=args.title,
                          synthetic=args.with_synthetic)
    try:
        report.save()
    except Exception as err:  # noqa: BLE001  no key, no network, no such entity: one line, no traceback
        print(f"error: saving the report to W&B {args.project} failed ({err.__class__.__name__}: {err}); it needs "
              "network access and an API key (WANDB_API_KEY or `wandb login`). --dry-run shows it offline.",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"saved: {report.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
