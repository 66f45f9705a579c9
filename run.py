"""Run MoEE experiments: `python run.py` (default smoke job) or e.g. `python run.py model=olmoe emb=moee_sum -m`."""

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from moee_exp.errors import USER_ERRORS, error_line
from moee_exp.faults import (Preempted, in_sweep_worker, is_write_fault, register_run_id_resolver, resume_hint,
                             stop_sweep_on_signal, write_error)
from moee_exp.jobs.config import read_job, register
from moee_exp.jobs.record import guard_hydra_writes
from moee_exp.jobs.preflight import check_reachable

register()
guard_hydra_writes()  # a full disk / file-size limit when Hydra writes .hydra/*.yaml: one error line, no traceback
register_run_id_resolver()  # ${moee.run_id:} in the default run / sweep dirs (conf/config.yaml)
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
    code = job(cfg, hc.runtime.output_dir, group)
    if code >= 128 and in_sweep_worker():  # stopped by a signal in a joblib worker: end the worker too, so that it
        sys.stdout.flush()  # takes no further job of the sweep (its parent prints the line that says how to resume)
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)


def job(cfg, job_dir, group: str, run: bool = True) -> int:
    """Check a composed config and run it; a user mistake is one `error:` line on stderr and exit code 2.

    tests/test_fuzz.py calls this in-process on configs from Hydra's compose API: the same path as the command.
    """
    try:
        job_cfg = read_job(cfg)  # config and model mistakes fail in seconds, before the heavy imports below
        from moee_exp.scoring.tasks import describe_data  # (mteb: after the config is known to be right)

        data = describe_data(job_cfg.tasks)
        origin = task_set_origin(HydraConfig.get()) if HydraConfig.initialized() else "composed config"
        log.info("tasks=%s: %d dataset(s), %s (%s)", job_cfg.tasks.name, len(job_cfg.tasks.names), data, origin)
        check_reachable(job_cfg.spec.model, job_cfg.cache)  # a model that can be neither loaded nor read from the feature cache: before any data
        if run:
            from moee_exp.jobs.runner import (
                run_job,  # heavy imports after Hydra has parsed the command line
            )

            run_job(job_cfg, job_dir, group)
    except USER_ERRORS as err:  # a mistake in the command or config: one line, no traceback
        print(error_line(err), file=sys.stderr)
        return 2
    except Preempted as stop:  # SIGTERM / SIGUSR1 / Ctrl-C: the runner has kept the finished rows and said so
        return 128 + stop.signum
    except KeyboardInterrupt:  # Ctrl-C outside the datasets' loop (which says what it kept): no traceback either
        print(f"stopped by SIGINT (Ctrl-C): the datasets already in {job_dir}/results are kept; run the same command "
              f"with {resume_hint(job_dir)} to resume", file=sys.stderr, flush=True)
        return 130
    except Exception as err:
        if not is_write_fault(err, space_only=True):
            raise
        print(error_line(write_error(job_dir, err)), file=sys.stderr)  # e.g. mteb's predictions on a full disk
        return 2
    return 0


if __name__ == "__main__":
    stop_sweep_on_signal()  # a signal to a sweep (joblib launcher) stops its workers too, with one resume line
    main()
