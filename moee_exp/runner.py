"""One Hydra job: config → featurizer → encoder → mteb on every task → local results → W&B → printed table."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from . import resume
from .cache import open_cache
from .config import template_of, validate
from .encoder import MoEEEncoder
from .evaluate import evaluate_tasks
from .featurize import Featurizer
from .loading import check_model
from .record import atomic_write, format_summary, wandb_logger, write_row, write_table
from .tasks import get_tasks

log = logging.getLogger(__name__)


def row_labels(cfg) -> dict:
    """The fields that name a result row: what was run, independent of where."""
    return {
        "model": cfg.model.name,
        "model_name_or_path": cfg.model.name_or_path or f"tiny:{cfg.model.tiny.model_type}",
        "emb": cfg.emb.kind,
        "alpha": float(cfg.emb.alpha) if cfg.emb.kind == "moee_sum" else None,
        "rw_activation": cfg.emb.rw_activation,
        "standardize": cfg.emb.standardize,
        "hs_feature": cfg.emb.hs_feature,
        "rw_feature": cfg.emb.rw_feature,
        "prompt": cfg.prompt.name,
        "task_set": cfg.tasks.name,
    }


def run_name(ident: dict) -> str:
    alpha = f"-a{ident['alpha']:g}" if ident["alpha"] is not None else ""
    return f"{ident['model']}-{ident['emb']}{alpha}-{ident['prompt']}"


def quiet_libraries() -> None:
    """Keep our per-dataset progress bars and table readable: mteb's INFO lines and datasets' bars are noise here."""
    import datasets

    datasets.disable_progress_bars()
    for name in ("mteb", "datasets", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_job(cfg, job_dir: Path, group: str) -> list[dict]:
    validate(cfg)
    quiet_libraries()
    check_model(cfg.model)  # a missing dir, a dense model or a missing bitsandbytes fail before any data is read
    tasks = get_tasks(cfg.tasks.names)  # unknown names fail before the model is loaded
    job_dir = Path(job_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # Rows already in this job dir whose key matches what would be computed now are reused (moee_exp.resume).
    overwrite = bool(cfg.get("overwrite", False))
    prediction_types = tuple(cfg.get("predictions") or ())

    # Optional: mteb's own result layout (a ResultCache root: results/<model>/<revision>/<task>.json + model_meta.json)
    # beside our rows, with the model's real metadata (moee_exp.mteb_model), for mteb's tooling to load.
    mteb_cache = mteb_meta = None
    if cfg.get("mteb_results"):
        import mteb

        from .mteb_model import runner_model_meta

        mteb_cache = mteb.ResultCache(Path(cfg.mteb_results).expanduser())
        mteb_meta = runner_model_meta(resolved, template_of(cfg.prompt))

    def required(task):  # a reused row also needs the predictions (and mteb result file) this run asks for
        files = []
        if task.metadata.type in prediction_types:
            files.append(job_dir / "predictions" / f"{task.metadata.name}_predictions.json")
        if mteb_cache is not None:
            files.append(mteb_cache.get_task_result_path(task.metadata.name, mteb_meta))
        return files

    plan = resume.plan(job_dir, tasks, resume.job_identity(resolved, template_of(cfg.prompt)), overwrite, required)
    atomic_write(job_dir / "config.yaml", OmegaConf.to_yaml(resolved))

    featurizer = Featurizer(
        resolved["model"],
        template_of(cfg.prompt),
        cfg.prompt.normalize,
        progress=cfg.progress,
        features=(cfg.emb.hs_feature, cfg.emb.rw_feature),
        cache=open_cache(resolved.get("cache")),
    )
    ident = row_labels(cfg)
    fuse_kwargs = {k: v for k, v in resolved["emb"].items() if k != "kind"}  # the emb group mirrors fuse()
    encoder = MoEEEncoder(
        featurizer, cfg.emb.kind, name=f"moee/{run_name(ident)}", revision=cfg.model.revision, **fuse_kwargs
    )
    if mteb_meta is not None:
        encoder.mteb_model_meta = mteb_meta
    rows = list(plan.reused.values())
    wb_config = {**resolved, "resume": plan.summary()}  # the W&B run records what was reused
    with wandb_logger(cfg.logger, config=wb_config, job_dir=job_dir, group=group, name=run_name(ident)) as wb:
        for row in rows:
            if wb:
                wb.log_row(row)
        truncated_before = featurizer.n_truncated
        for row in evaluate_tasks(
            encoder,
            plan.todo,
            batch_size=cfg.model.batch_size,
            progress=cfg.progress,
            prediction_folder=job_dir / "predictions",
            prediction_types=prediction_types,
            result_cache=mteb_cache,
        ):
            n_truncated, truncated_before = featurizer.n_truncated - truncated_before, featurizer.n_truncated
            row = {**ident, **row, "n_truncated": n_truncated, **plan.stamp(row["task"])}
            write_row(job_dir, row)  # local first: W&B trouble never costs a result
            rows.append(row)
            if wb:
                wb.log_row(row)
        order = [t.metadata.name for t in tasks]
        rows.sort(key=lambda r: order.index(r["task"]))
        write_table(job_dir, rows)
        if wb:
            wb.log_summary(rows)
    print(f"\n{run_name(ident)}  ({cfg.tasks.name} tasks; scores x100)\n{format_summary(rows)}")
    print(f"results: {job_dir / 'results'}/ and {job_dir / 'results.csv'}")
    return rows
