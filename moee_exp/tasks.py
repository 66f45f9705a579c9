"""Task names → mteb task objects: the bundled demo tasks first, then mteb's own registry."""

from __future__ import annotations

import difflib

import mteb

from .demo_tasks import DEMO_TASKS
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
        raise UnknownTaskError("unknown task(s): " + "; ".join(unknown))
    return tasks
