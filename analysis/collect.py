"""Every job's per-dataset result rows under one or more sweep dirs (or a W&B project) → one tidy DataFrame.

A job dir is a dir holding our ``config.yaml`` (the resolved config the runner writes first) or Hydra's ``.hydra/``.
A job is *incomplete* when a dataset of its ``tasks.names`` has no ``results/<task>.json`` (killed, crashed, still
running) or when it failed before writing its config; such jobs are listed in ``Collection.incomplete`` and their
finished rows are kept.

Two rows are the same computation when their ``identity`` (everything that changes the number: model, protocol,
prompt, features, emb, α, the dataset with its data source, splits and subsets) is the same once where and when they
ran (``WHERE_WHEN``: our code's hash, the device) is left out; the same computation run twice (a
re-run in another sweep) keeps the latest row (``computed_at``, else the file's mtime) and counts the rest in
``Collection.n_duplicates``. Anything else is never merged: each row's ``cell_id`` is its computation without the
dataset, and the tables keep one cell per ``cell_id`` (analysis.tables labels cells that differ only in a setting).
Rows written before rows carried an identity are keyed on the row fields that name a computation (``FALLBACK_KEY``).
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

from moee_exp.scoring import kinds

TASK_TYPES = ["Classification", "Clustering", "PairClassification", "Reranking", "Retrieval", "STS", "Summarization"]


def _weighted(kind) -> bool:
    """An emb kind that α weights (MoEE(sum)): its rows carry α and the weights option (moee_exp.scoring.kinds)."""
    return kind in kinds.names() and kinds.get(kind).weighted


# What makes two rows the same table cell (where and when they ran does not).
KEY = ["model", "emb", "weights", "alpha", "rw_activation", "standardize", "hs_feature", "rw_feature", "prompt", "task",
       "split", "protocol"]
# Further row fields that change a number: with KEY, the cell key of a row that has no ``identity`` (an old row).
FALLBACK_KEY = ["task_data", "instructions", "text_handling", "sum_scoring", "quantization", "quantize_routers"]
# Parts of a row's identity that say where or when it ran, not what was computed (dotted paths into the identity):
# the scorer block (our own code's hash, held to the same scores by the tests and scripts/compare_revisions.py) and
# the device type; and the model's and scorer's copies of library versions (each is in ``versions``, labelled once).
# Library versions are not among them: the same config run under another mteb or transformers is another computation
# (another cell, labelled with the version that differs), and a table that holds several versions says so.
WHERE_WHEN = ("scorer", "model.device_type", "model.torch", "model.transformers", "model.tokenizers")
# rows.csv's columns, and one versions.<package> column per library the rows' identity records
# (moee_exp.features.identity.SCORE_LIBRARIES)
COLUMNS = KEY + FALLBACK_KEY + ["method", "task_type", "main_score_name", "main_score", "score", "computed_at",
                                "job_dir", "predictions", "task_set", "model_name_or_path", "alpha_source",
                                "cell_id", "row_id", "setting", "task_identity"]
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
    if _weighted(emb.get("kind")):
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
        row.setdefault("task_data", ((cfg.get("tasks") or {}).get("data")) or "real")
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


def _drop_path(d: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if rest and isinstance(d.get(head), dict):
        d[head] = dict(d[head])
        _drop_path(d[head], rest)
    elif not rest:
        d.pop(head, None)


def _flat(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def setting_of(row: dict) -> dict:
    """What a row computed, without the dataset and without where / when it ran: a flat {dotted field: value}. From
    its ``identity`` (the resume identity every row carries) where it has one, else from its row fields."""
    ident = row.get("identity")
    if isinstance(ident, dict) and ident:
        ident = json.loads(json.dumps(ident, default=str))  # a deep copy
        for path in WHERE_WHEN:
            _drop_path(ident, path)
        task = ident.pop("task", None) or {}
        ident["data"] = row.get("task_data") or ("synthetic" if task.get("synthetic") else "real")
        if task.get("synthetic"):  # the generated data's size / seed / generator: the same for every task of a job
            ident["synthetic"] = task["synthetic"]
        emb = ident.get("emb") if isinstance(ident.get("emb"), dict) else {}
        blocks = kinds.get(emb["kind"]).blocks if emb.get("kind") in kinds.names() else ("hs", "rw")
        unused = () if "rw" in blocks else ("emb.rw_activation", "emb.rw_feature")  # settings of a block not used
        unused += () if "hs" in blocks else ("emb.hs_feature",)
        if not _weighted(emb.get("kind")):  # only an α-weighted kind (MoEE(sum)) reads protocol.sum_scoring
            unused += ("protocol.sum_scoring",)
        for path in unused:
            _drop_path(ident, path)
        weights = ident.get("weights")
        if isinstance(weights, dict) and weights.get("name") == "grid":  # grid runs one α: the computation of fixed
            ident["weights"] = {**weights, "name": "fixed"}
        return _flat(ident)
    out = {k: row.get(k) for k in KEY + FALLBACK_KEY if k not in ("task", "split")}
    out["task_data"] = out.get("task_data") or "real"
    return out


def _task_of(row: dict):
    """The dataset part of a row's computation: its task identity (splits, subsets, data revision) or its name."""
    ident = row.get("identity")
    if isinstance(ident, dict) and isinstance(ident.get("task"), dict):
        return ident["task"]
    if isinstance(row.get("task_identity"), str):  # a row tidied before (merge)
        return json.loads(row["task_identity"])
    return {"name": row.get("task"), "split": row.get("split")}


def _ids(rows: list[dict]) -> None:
    """Set ``setting`` (JSON), ``cell_id`` and ``row_id`` on each row (in place). Rows of one cell_id and task whose
    task identities differ (e.g. other subsets of STS17) belong to different computations: each such row's cell_id
    then also carries its job's variant of that task, so the two never share a cell."""
    for r in rows:
        if "cell_id" in r and isinstance(r.get("setting"), str) and r.get("row_id"):
            continue  # already tidied (merge)
        setting = setting_of(r)
        r["setting"] = json.dumps(setting, sort_keys=True, default=str)
        r["cell_id"] = _hash(setting)
        r["task_identity"] = json.dumps(_task_of(r), sort_keys=True, default=str)
        r["row_id"] = _hash([setting, _task_of(r)])
        versions = ((r.get("identity") or {}).get("versions") or {}) if isinstance(r.get("identity"), dict) else {}
        for package, version in versions.items():
            r.setdefault(f"versions.{package}", version)
    variants: dict[tuple, set] = {}
    for r in rows:
        variants.setdefault((r["cell_id"], r.get("task")), set()).add(_hash(_task_of(r)))
    split_jobs: dict[tuple, list] = {}  # (cell_id, job_dir) -> the variants its conflicting tasks have
    for r in rows:
        if len(variants[(r["cell_id"], r.get("task"))]) > 1:
            split_jobs.setdefault((r["cell_id"], r.get("job_dir")), []).append((r.get("task"), _task_of(r)))
    for r in rows:
        conflict = split_jobs.get((r["cell_id"], r.get("job_dir")))
        if conflict:
            setting = json.loads(r["setting"])
            for task, ident in sorted(conflict, key=lambda c: str(c[0])):
                for k, v in _flat({k: v for k, v in ident.items() if k not in ("name", "type", "main_score")}).items():
                    setting[f"{task}.{k}"] = v
            r["setting"] = json.dumps(setting, sort_keys=True, default=str)
            r["cell_id"] = _hash(setting)


def tidy(rows: list[dict]) -> tuple[pd.DataFrame, int]:
    """Rows → DataFrame with our columns, the latest row per computation (``row_id``); also the number of older
    duplicates dropped."""
    rows = [dict(r) for r in rows]
    _ids(rows)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS), 0
    columns = COLUMNS + sorted(c for c in df.columns if c.startswith("versions."))
    for col in columns:
        if col not in df:
            df[col] = None
    is_sum = df.emb.map(_weighted)
    df["alpha"] = [float(a) if s and a is not None and a == a else float("nan") for s, a in zip(is_sum, df.alpha)]
    df["weights"] = [(w if isinstance(w, str) else "fixed") if s else None for s, w in zip(is_sum, df.weights)]
    df["method"] = df.emb.map(lambda k: kinds.get(k).label if k in kinds.names() else k)
    df["protocol"] = df.protocol.fillna("clean")  # rows written before the protocol group: today's clean computation
    df["task_data"] = df.task_data.fillna("real")
    df["score"] = df.main_score.astype(float) * 100
    df = df[columns].sort_values("computed_at", kind="stable")
    n = len(df)
    df = df.drop_duplicates("row_id", keep="last")
    return df.sort_values(KEY + ["cell_id"], kind="stable").reset_index(drop=True), n - len(df)


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
            "protocol": cfg.get("protocol.name"), "instructions": cfg.get("protocol.instructions"),
            "text_handling": cfg.get("protocol.text"), "quantization": cfg.get("model.quantization"),
            "sum_scoring": cfg.get("protocol.sum_scoring") if _weighted(cfg.get("emb.kind")) else None,
            "quantize_routers": cfg.get("model.quantize_routers") if cfg.get("model.quantization") not in (
                None, "none") else None,
            "task_data": cfg.get("tasks.data") or "real",
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
