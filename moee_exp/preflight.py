"""Checks run in the launching process before a sweep's jobs are submitted (a Hydra callback, conf/config.yaml).

With the submitit or joblib launcher every job runs elsewhere: a mistake common to all of them (a missing model
dir, an unknown task, a bad value) would otherwise be found once per job, after queueing, and come back wrapped in
the launcher's traceback. Here the sweep's base config (every override that is not swept) is checked first and a
mistake stops the command with the same one line, exit 2, before anything is submitted. Swept values are checked
by each job as usual.
"""

from __future__ import annotations

import sys

from hydra.experimental.callback import Callback


class Preflight(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        from .config import validate
        from .errors import USER_ERRORS, error_line
        from .loading import check_model

        try:
            validate(config)
            check_model(config.model)
            from .tasks import check_prediction_types, get_tasks

            get_tasks(config.tasks.names)
            check_prediction_types(config.get("predictions"))
        except USER_ERRORS as err:
            print(error_line(err), file=sys.stderr)
            sys.exit(2)
