"""Task names → mteb task objects: the bundled demo tasks first, then mteb's own registry."""

from __future__ import annotations

import difflib

import mteb

from .demo_tasks import DEMO_TASKS
from .config import ConfigError
from .errors import UnknownTaskError  # noqa: F401  (defined there so run.py need not import mteb to catch it)


def get_tasks(names) -> list:
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
    return tasks


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
