"""One Hydra job: config → featurizer → encoder → mteb on every task → local results → W&B → printed table."""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import mteb
from omegaconf import OmegaConf

from ..errors import ConfigError
from ..faults import Preempted, hold_job_dir, in_sweep_worker, preemptible, resume_hint
from ..features.cache import open_cache
from ..features.loading import check_model
from ..scoring.evaluate import evaluate_tasks, main_score
from ..scoring.model_meta import model_meta
from ..scoring.paper_scoring import check_scorable, evaluate_paper_sum, main_score_name
from ..scoring.spec import build_encoder
from ..scoring.tasks import check_prediction_types, describe_data, tasks_from_config
from ..scoring.weights import AlphaChooser
from . import resume
from .config import Job, read_job
from .record import format_summary, wandb_logger, write_job_file, write_row, write_table

log = logging.getLogger(__name__)


def row_labels(job: Job) -> dict:
    """The fields that name a result row: what was run, independent of where. For moee_sum, ``alpha`` is the
    configured α (weights fixed/grid) or None until each task's α is chosen (auto/dev; moee_exp.scoring.weights)."""
    model, emb, weights, protocol = job.spec.model, job.spec.emb, job.weights, job.spec.protocol
    sum_ = job.spec.kind.weighted
    fixed = weights.name in ("fixed", "grid")
    return {
        "model": model.name,
        "model_name_or_path": model.name_or_path or f"tiny:{model.tiny['model_type']}",
        "emb": emb.kind,
        "weights": weights.name if sum_ else None,
        "alpha": float(weights.alpha) if sum_ and fixed else None,
        "rw_activation": emb.rw_activation,
        "standardize": emb.standardize,
        "hs_feature": emb.hs_feature,
        "rw_feature": emb.rw_feature,
        "prompt": job.spec.prompt.name,
        # the computation: paper (the public code's) or clean, and the protocol settings not already listed
        "protocol": protocol.name,
        "instructions": protocol.instructions,
        "text_handling": protocol.text,
        "sum_scoring": protocol.sum_scoring if sum_ else None,
        "quantization": model.quantization,
        "quantize_routers": bool(model.quantize_routers) if model.quantization != "none" else None,
        "task_set": job.tasks.name,
        "task_data": job.tasks.data,  # synthetic: a dry run on generated data (scores mean nothing)
    }


def run_name(job: Job) -> str:
    """The spec's name (moee_exp.scoring.spec), and -synthetic for a dry run: the W&B run and the printed table."""
    return job.spec.name + ("-synthetic" if job.tasks.data == "synthetic" else "")


def quiet_libraries() -> None:
    """Keep the job's progress and table readable: each silenced message is harmless here, for the reason given."""
    import warnings

    import datasets
    from sklearn.exceptions import ConvergenceWarning, UndefinedMetricWarning

    datasets.disable_progress_bars()  # the job's own bar counts datasets (moee_exp.scoring.evaluate)
    for name in ("mteb", "datasets", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)  # their INFO lines repeat what the job logs
    # mteb logs "task X is superseded by X.v2" and warns it again: the log line is kept (the paper's v1 tasks run on
    # purpose, README "The 19 datasets"), the duplicate goes
    warnings.filterwarnings("ignore", message=r"The task '.*' is superseded by")
    # mteb's classifiers: a class a small split never predicts makes precision 0 by sklearn's definition (the score
    # mteb reports), and mteb's logistic regression stops at max_iter=100 as the benchmark defines it
    warnings.filterwarnings("ignore", category=UndefinedMetricWarning)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)


def run_job(job: Job, job_dir: Path, group: str) -> list[dict]:
    """Run one job (a Job, or a composed config read here by ``read_job``) into ``job_dir``; return its rows.

    One job writes into a dir at a time: a second one is refused with one line naming the holder
    (faults.hold_job_dir)."""
    if not isinstance(job, Job):
        job = read_job(job)  # validated, and checked on this machine (device, writable dirs)
    quiet_libraries()
    check_model(job.spec.model)  # a missing dir, a dense model or a missing bitsandbytes fail before any data is read
    tasks = distinct_tasks(tasks_from_config(job.tasks))  # unknown names fail before the model is loaded
    check_prediction_types(job.predictions)
    if job.spec.paper_sum:  # every task type has the public code's scoring, or the job stops before any compute
        check_scorable(tasks)
    job_dir = Path(job_dir)
    with hold_job_dir(job_dir, resume_hint(job_dir).split("=", 1)[0]):
        return _run_job(job, job_dir, group, tasks)


def distinct_tasks(tasks: list) -> list:
    """Each task once, in its first place: a name listed twice (tasks.names=[STS12,STS12,STS13]) is computed and
    averaged once, with one warning."""
    seen, out, twice = set(), [], []
    for task in tasks:
        name = task.metadata.name
        if name in seen:
            twice.append(name)
            continue
        seen.add(name)
        out.append(task)
    if twice:
        log.warning("tasks.names lists %s more than once: each dataset is computed and averaged once",
                    ", ".join(dict.fromkeys(twice)))
    return out


def _run_job(job: Job, job_dir: Path, group: str, tasks: list) -> list[dict]:
    resolved = job.resolved
    # Rows already in this job dir whose key matches what would be computed now are reused (moee_exp.jobs.resume).
    overwrite = job.overwrite
    # protocol=paper's MoEE(sum) is scored outside mteb.evaluate (moee_exp.scoring.paper_scoring): no mteb predictions
    paper_sum = job.spec.paper_sum
    prediction_types = () if paper_sum else job.predictions

    # Optional: mteb's own result layout (a ResultCache root: results/<model>/<revision>/<task>.json + model_meta.json)
    # beside our rows, with the model's real metadata (moee_exp.integrations.mteb_model), for mteb's tooling to load.
    mteb_cache = mteb_meta = None
    if job.mteb_results and paper_sum:
        log.warning("mteb_results: not written for protocol.sum_scoring=paper (scored outside mteb.evaluate)")
    if job.mteb_results and not paper_sum:
        mteb_cache = mteb.ResultCache(Path(job.mteb_results).expanduser())
        mteb_meta = model_meta(job.spec)

    def required(task):  # a reused row also needs the predictions (and mteb result file) this run asks for
        files = []
        if task.metadata.type in prediction_types:
            files.append(job_dir / "predictions" / f"{task.metadata.name}_predictions.json")
        if mteb_cache is not None:
            files.append(mteb_cache.get_task_result_path(task.metadata.name, mteb_meta))
        return files

    plan_ident = resume.job_identity(job)
    foreign = resume.foreign_rows(job_dir, plan_ident, tasks)  # rows of another config: never replaced silently
    if foreign and not overwrite:
        fields = sorted({f for fs in foreign.values() for f in fs})
        raise ConfigError(
            f"{job_dir} holds results of another config for {len(foreign)} dataset(s) ({', '.join(foreign)}; "
            f"changed: {', '.join(fields)}); nothing was replaced: run into a new dir, or add overwrite=true to move "
            f"them to {job_dir / 'replaced'}/ and compute this config there"
        )
    if foreign:
        log.warning("overwrite=true: %d result(s) of another config moved to %s", len(foreign),
                    resume.set_aside(job_dir, foreign))
    plan = resume.plan(job_dir, tasks, plan_ident, overwrite, required)
    write_job_file(job_dir / "config.yaml", OmegaConf.to_yaml(resolved))

    # α comes from the weights group, per task for auto/dev (moee_exp.scoring.weights)
    encoder = build_encoder(job.spec, cache=open_cache(job.cache), progress=job.progress, alpha=job.weights.alpha,
                            meta=mteb_meta)
    featurizer = encoder.model
    ident = row_labels(job)
    chooser = None
    if job.spec.kind.weighted:
        emb = {k: v for k, v in job.spec.emb.fuse_kwargs().items() if k != "alpha"}
        # model × prompt (× protocol: its text handling and instructions change the features)
        features_of = {k: plan_ident[k] for k in ("model", "prompt", "features", "protocol")}
        chooser = AlphaChooser(
            job.weights, emb, encoder, featurizer,
            # weights=dev scores its α grid as the job scores: mteb's similarity sum, or the public code's scoring
            score=(lambda task, split: paper_sum_scorer(encoder)(task, split)[0]) if paper_sum
            else (lambda task, split: main_score(encoder, task, split, job.spec.model.batch_size)),
            calibration_key=resume.row_key(features_of),
        )
    rows = list(plan.reused.values())
    # the W&B run records what was reused, and every library version that can move a score
    # (emb.alpha is not read: MoEE(sum)'s α is the weights group's)
    wb_config = {**resolved, "emb": {k: v for k, v in resolved["emb"].items() if k != "alpha"},
                 "resume": plan.summary(), "versions": plan_ident["versions"]}
    wb_tags = [job.spec.model.name, job.spec.emb.kind, f"{job.spec.protocol.name} protocol", f"{job.tasks.data} data", job.spec.prompt.name]
    order = [t.metadata.name for t in tasks]
    # SIGTERM / SIGUSR1 (or submitit's requeue) abandon the dataset in flight and keep the finished rows
    # one W&B run per job dir and config: a resumed job continues it
    wb_id = resume.row_key({"job_dir": str(job_dir.resolve()), "job": plan_ident})[:16]
    wb_run = wandb_logger(job.logger, config=wb_config, job_dir=job_dir, group=group, name=run_name(job),
                          tags=wb_tags, run_id=wb_id)
    with preemptible(), wb_run as wb, _kept_on_stop(job_dir, rows, order, wb):
        for row in rows:
            if wb:
                wb.log_row(row)
        truncated_before = featurizer.n_truncated
        for row in evaluate_tasks(
            encoder,
            plan.todo,
            batch_size=job.spec.model.batch_size,
            progress=job.progress,
            prediction_folder=job_dir / "predictions",
            prediction_types=prediction_types,
            prepare=chooser,
            result_cache=mteb_cache,
            score=paper_sum_scorer(encoder) if paper_sum else None,
        ):
            n_truncated, truncated_before = featurizer.n_truncated - truncated_before, featurizer.n_truncated
            row = {**ident, **row, "n_truncated": n_truncated, **plan.stamp(row["task"])}
            write_row(job_dir, row)  # local first: W&B trouble never costs a result
            rows.append(row)
            if wb:
                wb.log_row(row)
        rows.sort(key=lambda r: order.index(r["task"]))
        write_table(job_dir, rows)
        if wb:
            wb.log_summary(rows)
    model = "; a tiny random model: scores mean nothing" if job.spec.model.tiny else ""
    print(f"\n{run_name(job)}  ({job.tasks.name} tasks, {describe_data(job.tasks)}{model}; scores x100)\n"
          f"{format_summary(rows)}")
    print(f"results: {job_dir / 'results'}/ and {job_dir / 'results.csv'}")
    return rows


@contextmanager
def _kept_on_stop(job_dir: Path, rows: list[dict], order: list[str], wb):
    """On SIGTERM / SIGUSR1 / Ctrl-C (faults.Preempted, KeyboardInterrupt) or submitit's requeue (SystemExit): the
    dataset in flight is abandoned; results.csv and the W&B run get the finished rows; one line says so (in a joblib
    sweep's worker without the resume hint: the sweep's parent prints it once, faults.stop_sweep_on_signal)."""
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C that arrived outside faults.preemptible's handler: the same clean stop
        with _kept_on_stop(job_dir, rows, order, wb):
            raise Preempted(signal.SIGINT) from None
    except (Preempted, SystemExit) as stop:
        done = sorted(rows, key=lambda r: order.index(r["task"]))
        if done:  # (further SIGTERM / SIGUSR1 are ignored from here on: faults.preemptible)
            write_table(job_dir, done)
            if wb:
                wb.log_summary(done)
        why = f"stopped by {stop.name}" if isinstance(stop, Preempted) else "stopped for submitit's requeue"
        then = (f"; run the same command with {resume_hint(job_dir)} to resume" if isinstance(stop, Preempted)
                else "; the requeued job resumes from them")
        if isinstance(stop, Preempted) and in_sweep_worker():
            then = ""
        print(f"{why}: kept {len(done)} of {len(order)} dataset(s) in {job_dir / 'results'} (and results.csv){then}",
              file=sys.stderr, flush=True)
        raise


def paper_sum_scorer(encoder):
    """MoEE(sum) scored as the public code does per task type (moee_exp.scoring.paper_scoring): (task, split) -> (main
    score, scores), from the encoder's two standardized blocks and its current α (set per task by the chooser)."""

    def score(task, split):
        return evaluate_paper_sum(task, encoder.encode_blocks, float(encoder.fuse_kwargs["alpha"]), split=split)

    score.main_score_name = main_score_name  # the fork's (Reranking: map; Retrieval: the task's own)
    return score
