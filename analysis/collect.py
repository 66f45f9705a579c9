"""Every job's per-dataset result rows under one or more sweep dirs (or a W&B project) → one tidy DataFrame.

A job dir is a dir holding our ``config.yaml`` (the resolved config the runner writes first) or Hydra's ``.hydra/``.
A job is *incomplete* when a dataset of its ``tasks.names`` has no ``results/<task>.json`` (killed, crashed, still
running) or when it failed before writing its config; such jobs are listed in ``Collection.incomplete`` and their
finished rows are kept. The same cell run twice (a re-run in another sweep) keeps the latest row (``computed_at``,
else the file's mtime) and counts the rest in ``Collection.n_duplicates``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

METHODS = {"hs": "HS", "rw": "RW", "moee_concat": "MoEE_concat", "moee_sum": "MoEE_sum"}
TASK_TYPES = ["Classification", "Clustering", "PairClassification", "Reranking", "Retrieval", "STS", "Summarization"]
# What makes two rows the same table cell (where and when they ran does not).
KEY = ["model", "emb", "weights", "alpha", "rw_activation", "standardize", "hs_feature", "rw_feature", "prompt", "task",
       "split", "protocol"]
COLUMNS = KEY + ["method", "task_type", "main_score_name", "main_score", "score", "computed_at", "job_dir",
                 "predictions", "task_set", "model_name_or_path", "alpha_source"]
# How MoEE(sum)'s α was chosen (moee_exp.scoring.weights); a row written before the weights group existed is `fixed`.
CHOSEN_PER_TASK = ("auto", "dev")


@dataclass
class Collection:
    rows: pd.DataFrame  # one row per cell (latest run), score = main_score x 100
    incomplete: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["job_dir", "job", "missing"]))
    n_duplicates: int = 0
    n_jobs: int = 0


def find_job_dirs(paths) -> list[Path]:
    jobs = set()
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such dir")
        for marker in [*root.rglob("config.yaml"), *root.rglob(".hydra")]:
            if "wandb" in marker.relative_to(root).parts or marker.parent.name == ".hydra":
                continue  # W&B's own files; Hydra's unresolved copy of the config
            if marker.name == ".hydra" or (marker.parent / "results").is_dir() or (marker.parent / ".hydra").is_dir():
                jobs.add(marker.parent)
    return sorted(jobs)


def _prompt_label(cfg: dict, row: dict) -> str:
    template = (cfg.get("prompt") or {}).get("template")
    if template:  # a custom template must not be mistaken for the named prompt
        return f"custom-{hashlib.sha1(template.encode()).hexdigest()[:6]}"
    return row.get("prompt") or (cfg.get("prompt") or {}).get("name")


def _job_label(cfg: dict) -> str:
    emb = cfg.get("emb") or {}
    w = cfg.get("weights") or {"name": "fixed", "alpha": emb.get("alpha")}  # runs from before the weights group
    alpha = ""
    if emb.get("kind") == "moee_sum":
        alpha = f" {w['name']}" if w.get("name") in CHOSEN_PER_TASK else f" a={w.get('alpha') or 1.0:g}"
    return f"{(cfg.get('model') or {}).get('name')} {emb.get('kind')}{alpha} {(cfg.get('prompt') or {}).get('name')}"


def read_job(job_dir: Path) -> tuple[list[dict], dict | None]:
    """(rows, incomplete-record or None) of one job dir."""
    cfg_path = job_dir / "config.yaml"
    if not cfg_path.exists():
        return [], {"job_dir": str(job_dir), "job": "?", "missing": "everything (failed before writing config.yaml)"}
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    rows, unreadable = [], []
    for path in sorted((job_dir / "results").glob("*.json")):
        try:
            row = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            unreadable.append(path.stem)
            continue
        row["prompt"] = _prompt_label(cfg, row)
        row["computed_at"] = row.get("computed_at") or dt.datetime.fromtimestamp(
            path.stat().st_mtime, dt.timezone.utc).isoformat(timespec="milliseconds")
        row["job_dir"] = str(job_dir)
        pred = job_dir / "predictions" / f"{row['task']}_predictions.json"
        row["predictions"] = str(pred) if pred.exists() else None
        rows.append(row)
    expected = list((cfg.get("tasks") or {}).get("names") or [])
    missing = [t for t in expected if t not in {r["task"] for r in rows}]
    if missing or unreadable:
        what = ", ".join(missing) + (f" (unreadable: {', '.join(unreadable)})" if unreadable else "")
        return rows, {"job_dir": str(job_dir), "job": _job_label(cfg), "missing": what}
    return rows, None


def tidy(rows: list[dict]) -> tuple[pd.DataFrame, int]:
    """Rows → DataFrame with our columns, latest row per cell; also the number of older duplicates dropped."""
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS), 0
    for col in COLUMNS:
        if col not in df:
            df[col] = None
    is_sum = df.emb == "moee_sum"
    df["alpha"] = [float(a) if s and a is not None and a == a else float("nan") for s, a in zip(is_sum, df.alpha)]
    df["weights"] = [(w if isinstance(w, str) else "fixed") if s else None for s, w in zip(is_sum, df.weights)]
    df["method"] = df.emb.map(METHODS).fillna(df.emb)
    df["protocol"] = df.protocol.fillna("clean")  # rows written before the protocol group: today's clean computation
    df["score"] = df.main_score.astype(float) * 100
    df = df[COLUMNS].sort_values("computed_at", kind="stable")
    n = len(df)
    df = df.drop_duplicates([k for k in KEY], keep="last")  # NaN alphas compare equal here
    return df.sort_values(KEY, kind="stable").reset_index(drop=True), n - len(df)


def collect(paths) -> Collection:
    jobs = find_job_dirs(paths)
    rows, incomplete = [], []
    for job in jobs:
        job_rows, missing = read_job(job)
        rows += job_rows
        if missing:
            incomplete.append(missing)
    df, n_dup = tidy(rows)
    inc = pd.DataFrame(incomplete, columns=["job_dir", "job", "missing"])
    return Collection(df, inc, n_dup, len(jobs))


# ---------------------------------------------------------------- W&B


class WandbUnavailable(RuntimeError):
    pass


def collect_wandb(project: str) -> Collection:
    """Rows of every run of a W&B project ("entity/project"): its config and the per-dataset scores each job logs
    as ``<task type>/<task>`` (x100). Needs network access and an API key."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        raise WandbUnavailable(f"reading W&B project {project!r} needs W&B online, but WANDB_MODE="
                               f"{os.environ['WANDB_MODE']}; unset it (and set WANDB_API_KEY), or read local dirs")
    try:
        import wandb

        runs = list(wandb.Api(timeout=30).runs(project))
    except Exception as err:  # noqa: BLE001  no key, no network, no such project
        raise WandbUnavailable(f"cannot read W&B project {project!r} ({err.__class__.__name__}: {err}); it needs "
                               "network access and an API key (WANDB_API_KEY or `wandb login`)") from None
    rows, incomplete = [], []
    for run in runs:
        cfg = dict(run.config)
        ident = {
            "model": cfg.get("model.name"), "model_name_or_path": cfg.get("model.name_or_path"),
            "emb": cfg.get("emb.kind"), "weights": cfg.get("weights.name", "fixed"),
            "alpha": cfg.get("weights.alpha", cfg.get("emb.alpha")),
            "rw_activation": cfg.get("emb.rw_activation"), "standardize": cfg.get("emb.standardize"),
            "hs_feature": cfg.get("emb.hs_feature", "hs"), "rw_feature": cfg.get("emb.rw_feature", "rw"),
            "prompt": cfg.get("prompt.name") if not cfg.get("prompt.template") else "custom",
            "task_set": cfg.get("tasks.name"), "split": "test", "computed_at": str(run.created_at),
            "job_dir": f"wandb:{'/'.join(run.path)}", "predictions": None,
        }
        done = set()
        for key, value in dict(run.summary).items():
            task_type, _, task = key.partition("/")
            if task_type in TASK_TYPES and isinstance(value, (int, float)):
                row = {**ident, "task": task, "task_type": task_type, "main_score": value / 100}
                if ident["weights"] in CHOSEN_PER_TASK:  # its α per task, as the job logged it
                    row["alpha"] = dict(run.summary).get(f"alpha/{task}")
                rows.append(row)
                done.add(task)
        missing = [t for t in cfg.get("tasks.names") or [] if t not in done]
        if missing or run.state != "finished":
            incomplete.append({"job_dir": ident["job_dir"], "job": run.name,
                               "missing": ", ".join(missing) or f"(run state: {run.state})"})
    df, n_dup = tidy(rows)
    return Collection(df, pd.DataFrame(incomplete, columns=["job_dir", "job", "missing"]), n_dup, len(runs))


def merge(collections: list[Collection]) -> Collection:
    frames = [c.rows for c in collections if not c.rows.empty]
    df, n_dup = tidy(pd.concat(frames).to_dict("records")) if frames else (pd.DataFrame(columns=COLUMNS), 0)
    inc = pd.concat([c.incomplete for c in collections], ignore_index=True)
    return Collection(df, inc, n_dup + sum(c.n_duplicates for c in collections), sum(c.n_jobs for c in collections))
