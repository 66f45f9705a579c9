"""Run MoEE experiments: `python run.py` (default smoke job) or e.g. `python run.py model=olmoe emb=moee_sum -m`."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from moee_exp.config import register, validate
from moee_exp.errors import USER_ERRORS
from moee_exp.preflight import check_reachable

register()
log = logging.getLogger("moee")


def task_set_origin(hc) -> str:
    """Why this job has its task set: the command line, an experiment, or the model's default (conf/model/)."""
    if any(o.lstrip("+~").split("=")[0] in ("tasks", "tasks.names") for o in hc.overrides.task):
        return "set on the command line"
    if hc.runtime.choices.get("experiment"):
        return f"from +experiment={hc.runtime.choices['experiment']}"
    return f"the default for model={hc.runtime.choices.get('model')}; tasks=... picks another"


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg) -> None:
    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    group = (hc.sweep.dir if sweep else hc.run.dir).replace("/", "_")
    try:
        validate(cfg)  # config and model mistakes fail in seconds, before the heavy imports below
        data = "synthetic data: a dry run, scores mean nothing" if cfg.tasks.data == "synthetic" else "real data"
        log.info("tasks=%s: %d dataset(s), %s (%s)", cfg.tasks.name, len(cfg.tasks.names), data, task_set_origin(hc))
        check_reachable(cfg)  # a model that can be neither loaded nor read from the feature cache: before any data
        from moee_exp.runner import run_job  # heavy imports after Hydra has parsed the command line

        run_job(cfg, hc.runtime.output_dir, group)
    except USER_ERRORS as err:  # a mistake in the command or config: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
