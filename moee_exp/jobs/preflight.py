"""Checks run in the launching process before a sweep's jobs are submitted (a Hydra callback, conf/config.yaml).

With the submitit or joblib launcher every job runs elsewhere: a mistake common to all of them (a missing model
dir, an unknown task, a bad value) would otherwise be found once per job, after queueing, and come back wrapped in
the launcher's traceback. Here the sweep's base config (every override that is not swept) is checked first and a
mistake stops the command with the same one line, exit 2, before anything is submitted. Swept values are checked
by each job as usual. A model that cannot be reached (no local dir, not on the hub, not in the HF cache) stops the
sweep here too, unless the feature cache already holds features of it (``check_reachable``; run.py applies the
same check to a single job before it reads any data).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from ..errors import USER_ERRORS, ModelNotFoundError, error_line
from ..faults import note_sweep
from ..features.cache import CacheConfig
from ..features.loading import ModelConfig, check_model
from .config import _check_writable_dir, read_job

log = logging.getLogger(__name__)


def _cached_models(cache: CacheConfig) -> set[str]:
    """The models (hub ids / dirs) that have a namespace in the feature cache (its meta.json says whose)."""
    if not cache.enabled:
        return set()
    found = set()
    for meta in Path(str(cache.dir)).expanduser().glob("*/meta.json"):
        try:
            found.add(str(json.loads(meta.read_text())["model"]["model"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def check_reachable(model: ModelConfig, cache: CacheConfig) -> None:
    """Raise ModelNotFoundError (the load's own message) when the model can be neither loaded now (no local dir,
    not on the hub, not in the HF cache; HF_HUB_OFFLINE counts) nor served from the feature cache. With features of
    this model in the cache a job may never need it: then only a warning (a job that misses a text fails as usual)."""
    try:
        check_model(model, reachable=True)
    except ModelNotFoundError as err:
        if str(model.name_or_path) in _cached_models(cache):
            log.warning("%s; going on: the feature cache holds features of this model", err)
            return
        raise


def check_output_dir(config, key: str) -> None:
    """Hydra creates the job's (or sweep's) dir before any job code runs: a dir that cannot be created would end
    in Hydra's traceback, so it is checked here, in the callback that runs first."""
    _check_writable_dir(OmegaConf.select(config, key), key)


class Preflight(Callback):
    def on_run_start(self, config, **kwargs) -> None:
        try:
            check_output_dir(config, "hydra.run.dir")
        except USER_ERRORS as err:
            print(error_line(err), file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config, **kwargs) -> None:
        try:
            # a signal to this process stops the sweep's workers too (moee_exp.faults.stop_sweep_on_signal)
            note_sweep(OmegaConf.select(config, "hydra.sweep.dir"), OmegaConf.select(config, "hydra.launcher._target_"))
            check_output_dir(config, "hydra.sweep.dir")
            job = read_job(config, here=False)  # the sweep may be launched from a login node: no device check
            check_reachable(job.spec.model, job.cache)
            from ..scoring.tasks import check_prediction_types, tasks_from_config  # mteb: a sweep's start only

            tasks_from_config(job.tasks)
            check_prediction_types(job.predictions)
        except USER_ERRORS as err:
            print(error_line(err), file=sys.stderr)
            sys.exit(2)
