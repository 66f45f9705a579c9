"""Task names → mteb task objects: the bundled demo tasks first, then mteb's own registry."""

from __future__ import annotations

import difflib

import mteb

from ..errors import (
    ConfigError,
    UnknownTaskError,  # noqa: F401  (defined there so run.py need not import mteb to catch it)
)
from .demo_tasks import DEMO_TASKS


def get_tasks(names, data: str = "real", size: str = "small", seed: int = 0, benchmark: str | None = None) -> list:
    """mteb task objects for ``names``, as ``benchmark`` defines them if given; with ``data="synthetic"`` their data
    loading is replaced by generated data of each task's own schema (``moee_exp.scoring.synthetic_tasks``, ``size`` small |
    real)."""
    tasks = benchmark_tasks(benchmark, names) if benchmark else _get_tasks(names)
    if data == "synthetic":
        from .synthetic_tasks import synthesize

        tasks = [synthesize(task, size, seed) for task in tasks]
    return tasks


def tasks_from_config(tasks) -> list:
    """The tasks of a task set (conf/tasks/; a moee_exp.jobs.config.TasksConfig)."""
    return get_tasks(tasks.names, tasks.data, tasks.synthetic.size, tasks.synthetic.seed, tasks.benchmark)


def benchmark_tasks(benchmark: str, names) -> list:
    """The tasks ``names`` of mteb's benchmark ``benchmark`` with the benchmark's own subsets and splits."""
    import copy

    try:
        bench = mteb.get_benchmark(benchmark)
    except (KeyError, ValueError) as err:
        raise UnknownTaskError(f"tasks.benchmark={benchmark!r} is not an mteb benchmark ({err})") from None
    by_name = {t.metadata.name: t for t in bench.tasks}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise UnknownTaskError(f"tasks.names: {missing} are not tasks of mteb benchmark {benchmark!r}; "
                               f"regenerate the set with scripts/benchmark_task_set.py or drop tasks.benchmark")
    tasks = [copy.deepcopy(by_name[n]) for n in names]  # our own objects: synthesize and scoring change them
    for task in tasks:
        own_evaluator_model(task)
    return tasks


def describe_data(tasks) -> str:
    """Where the task set's data comes from, for logs and printed tables: the bundled demo data, a dataset's real
    data, or generated data (a dry run)."""
    if tasks.data != "synthetic" and set(tasks.names) <= set(DEMO_TASKS):
        return "bundled demo data: hand-written, a few rows each"
    if tasks.data != "synthetic":
        return "real data"
    return f"synthetic data (size {tasks.synthetic.size}, seed {tasks.synthetic.seed}; scores mean nothing)"


def _get_tasks(names) -> list:
    tasks, unknown = [], []
    for name in names:
        if name in DEMO_TASKS:
            tasks.append(DEMO_TASKS[name]())
            continue
        try:
            tasks.append(mteb.get_task(name))
        except KeyError as err:
            close = difflib.get_close_matches(name, list(DEMO_TASKS), n=2)
            hint = str(err).strip("\"'").replace("KeyError: ", "")
            unknown.append(f"{hint}" + (f" (bundled demo tasks: {', '.join(close)})" if close else ""))
    if unknown:
        raise UnknownTaskError("tasks.names: unknown task(s): " + "; ".join(unknown))
    for task in tasks:
        own_evaluator_model(task)
    return tasks


def own_evaluator_model(task) -> None:
    """Give a classification task its own copy of its sklearn model. mteb keeps one LogisticRegression on the
    class, shared by every instance, and fits it in place: two jobs scoring in one process at once (threads)
    would fit and predict with each other's coefficients. A clone has the same parameters, so the same scores."""
    model = getattr(task, "evaluator_model", None)
    if model is not None and hasattr(model, "get_params"):
        from sklearn.base import clone

        task.evaluator_model = clone(model)


def check_prediction_types(types) -> None:
    """``predictions=[...]`` names mteb task types (a misspelt one would silently save nothing)."""
    from typing import get_args

    from mteb.abstasks.task_metadata import TaskType

    known = get_args(TaskType)
    unknown = [t for t in types or () if t not in known]
    if unknown:
        close = {t: difflib.get_close_matches(str(t), known, n=1) for t in unknown}
        hints = ", ".join(f"{t!r}" + (f" (did you mean {c[0]}?)" if c else "") for t, c in close.items())
        raise ConfigError(f"predictions: unknown mteb task type(s) {hints}; e.g. predictions=[STS,Clustering]")
