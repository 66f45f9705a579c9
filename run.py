"""Run MoEE experiments: `python run.py` (default smoke job) or e.g. `python run.py model=olmoe emb=moee_sum -m`."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from moee_exp.config import register, validate
from moee_exp.errors import USER_ERRORS
from moee_exp.loading import check_model

register()
log = logging.getLogger("moee")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg) -> None:
    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    group = (hc.sweep.dir if sweep else hc.run.dir).replace("/", "_")
    try:
        validate(cfg)  # config and model mistakes fail in seconds, before the heavy imports below
        check_model(cfg.model)
        from moee_exp.runner import run_job  # heavy imports after Hydra has parsed the command line

        run_job(cfg, hc.runtime.output_dir, group)
    except USER_ERRORS as err:  # a mistake in the command or config: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
