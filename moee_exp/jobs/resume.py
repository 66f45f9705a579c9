"""Resume a job: which result rows already in its job dir are still valid, and which datasets must be computed.

Every row a job writes (``results/<task>.json``, one per dataset, atomically, as soon as it is scored) carries
``row_key``: the hash of everything that changes that dataset's score —

- the spec's identity (``MoEESpec.identity``, moee_exp.scoring.spec): the model (``features.identity.model_identity``:
  tiny spec hash / local dir fingerprint / hub id + revision + cached commit, resolved dtype, quantization, device
  type, torch and transformers versions; ``max_length``), the prompt's template and normalization, every ``emb.*``
  and ``protocol.*`` value;
- the features: ``extract.EXTRACTION_VERSION``, the feature cache's dtype;
- for an α-weighted kind (moee_sum), how α is chosen (``weights.identity``: the α of fixed/grid, the criterion and sample size of auto, the grid of dev);
- the dataset: task name, type, main score, the splits and language subsets evaluated (``task.eval_splits``,
  ``task.hf_subsets``: a benchmark's STS17 is en-en only) and ``metadata.dataset`` (path + data revision; the bundled
  demo tasks' revision is a hash of their data file), and for generated data (``tasks.data=synthetic``) its size,
  seed and generator version; the data source (real / synthetic) is also a job field (``data``);
- the scorer: the mteb version and a hash of our scoring code's source (``CODE_FILES``);
- ``versions``: every installed library that can move a score (``features.identity.SCORE_LIBRARIES``).

A re-run into the same job dir (``hydra.run.dir=...`` / ``hydra.sweep.dir=...``) reuses a row only if its key is
the key of what it would compute now, so a changed dataset, model, config or code is recomputed, never reused.
``overwrite=true`` recomputes everything. Nothing here reads mteb's result cache (``evaluate`` passes cache=None):
its "only-missing" strategy keys on model name + task only and would reuse stale scores.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from ..features.extract import EXTRACTION_VERSION
from ..features.identity import library_versions, package_version
from ..scoring.weights import identity as weights_identity

log = logging.getLogger(__name__)

# The modules that turn a loaded model and a dataset into a score. Any edit to them makes old rows stale (the
# feature cache keeps a recompute cheap: it is keyed on extract.EXTRACTION_VERSION, not on this hash).
CODE_FILES = (
    "features/extract.py", "features/routers.py", "features/prompts.py", "features/instructions.py",
    "scoring/fuse.py", "scoring/encoder.py", "scoring/evaluate.py", "scoring/tasks.py", "scoring/demo_tasks.py",
    "scoring/synthetic_tasks.py", "scoring/weights.py", "scoring/paper_scoring.py", "scoring/kinds/*.py",
)
# Set in every row this process computes, so a re-run can tell reused rows (older run_uid) from new ones.
RUN_UID = uuid.uuid4().hex[:12]


@lru_cache(maxsize=1)
def code_version() -> str:
    h = hashlib.sha256()
    here = Path(__file__).parents[1]  # moee_exp/
    for pattern in CODE_FILES:  # (a pattern: every file it matches, a registered emb kind's module among them)
        for path in sorted(here.glob(pattern)) or [here / pattern]:
            name = path.relative_to(here).as_posix()
            h.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"") + b"\0")
    return h.hexdigest()[:16]


def job_identity(job) -> dict:
    """What every row of this job (a moee_exp.jobs.config.Job) depends on: its spec's identity (model, prompt, emb,
    protocol, α: moee_exp.scoring.spec), how features are stored, the data source, how α is chosen, the scorer and
    the library versions."""
    spec, cache = job.spec, job.cache
    return {
        **spec.identity(),
        "features": {
            "extraction_version": EXTRACTION_VERSION,
            "dtype": str(cache.dtype) if cache.enabled else "float32",
        },
        # where the data comes from: a synthetic dry run never shares a dir with real rows (refused, like a changed α)
        "data": _data_source(asdict(job.tasks)),
        # how α is chosen, for the kinds α weights (the others do not depend on it)
        "weights": weights_identity(asdict(job.weights)) if spec.kind.weighted else None,
        "scorer": {"mteb": package_version("mteb"), "moee_exp": package_version("moee-exp"), "code": code_version()},
        # every library that can move a number (features.identity.SCORE_LIBRARIES), for the report to compare rows
        "versions": library_versions(),
    }


def _data_source(tasks: Mapping) -> dict:
    data = str(tasks.get("data", "real"))
    synthetic = tasks.get("synthetic") if data == "synthetic" else None
    return {"source": data, **({"synthetic": dict(synthetic)} if isinstance(synthetic, Mapping) else {})}


# The task fields that a config chooses (tasks=..., tasks.data=...), not the dataset's own version: a rerun into a dir
# whose row of that task differs in one of them is refused like a changed α (foreign_rows), never silently replaced.
CONFIG_TASK_FIELDS = ("eval_splits", "hf_subsets", "synthetic")


def task_identity(task) -> dict:
    m = task.metadata
    return {
        "name": m.name,
        "type": m.type,
        "main_score": m.main_score,
        # what is evaluated: a task taken from a benchmark may be filtered to some splits and language subsets
        "eval_splits": list(getattr(task, "eval_splits", None) or m.eval_splits),
        "hf_subsets": sorted(str(s) for s in (getattr(task, "hf_subsets", None) or ())),
        "dataset": {k: str(v) for k, v in dict(m.dataset).items()},  # path + revision (the data version)
        # generated data (moee_exp.scoring.synthetic_tasks): never reused for the real data, nor across sizes or seeds
        **({"synthetic": dict(task.synthetic)} if getattr(task, "synthetic", None) else {}),
    }


def row_key(identity: Mapping) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _changed(old: Mapping | None, new: Mapping, prefix: str = "") -> list[str]:
    """Dotted names of the identity fields that differ (for the log line that says why a row is recomputed)."""
    if not isinstance(old, Mapping):
        return [prefix.rstrip(".") or "identity"]
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _changed(a, b, f"{prefix}{k}.")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{prefix}{k}")
    return out


@dataclass
class ResumePlan:
    todo: list  # tasks to compute, in the job's order
    reused: dict[str, dict] = field(default_factory=dict)  # task name -> row kept from an earlier run
    stale: dict[str, list[str]] = field(default_factory=dict)  # task name -> identity fields that changed
    identities: dict[str, dict] = field(default_factory=dict)  # task name -> row identity
    overwrite: bool = False

    def stamp(self, task_name: str) -> dict:
        """The fields a freshly computed row carries so a later run can decide whether to reuse it."""
        identity = self.identities[task_name]
        return {
            "row_key": row_key(identity),
            "identity": identity,
            "computed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "run_uid": RUN_UID,
        }

    def summary(self) -> dict:
        """For the W&B run's config and the log: what was reused, what is computed, and why."""
        return {
            "overwrite": self.overwrite,
            "reused_tasks": sorted(self.reused),
            "computed_tasks": [t.metadata.name for t in self.todo],
            "stale_tasks": sorted(self.stale),
        }


def _read_row(path: Path, quiet: bool = False) -> dict | None:
    """The row in ``path``, or None (logged unless ``quiet``) when it cannot be read or reused (``row_problem``)."""
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        if not quiet:
            log.warning("%s is unreadable (%s): its dataset is computed again", path, err.__class__.__name__)
        return None
    problem = row_problem(row)
    if problem:
        if not quiet:
            log.warning("%s is not a valid result row (%s): its dataset is computed again", path, problem)
        return None
    return row


def row_problem(row) -> str | None:
    """Why ``row`` cannot be reused or summarized (None: it can): a row whose key is valid but whose score is not a
    finite number (an edited or half-written file) is computed again, whatever its key says."""
    if not isinstance(row, dict):
        return "not a JSON object"
    score = row.get("main_score")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        return f"main_score is {score!r}, not a number"
    if score != score or score in (float("inf"), float("-inf")):
        return f"main_score is {score!r}"
    for key in ("task", "task_type", "main_score_name"):  # (what the printed table reads, where the row has it)
        if key in row and not (isinstance(row[key], str) and row[key]):
            return f"{key} is {row[key]!r}"
    return None


def plan(job_dir: Path, tasks: Sequence, job_ident: Mapping, overwrite: bool = False, required=None) -> ResumePlan:
    """Split ``tasks`` into rows to reuse from ``job_dir/results`` and tasks to compute.

    ``required(task)`` lists files a reused row also needs (e.g. its mteb predictions, when this run asks for them
    and the earlier one did not): if one is missing, the dataset is computed again.
    """
    result = ResumePlan(todo=[], overwrite=bool(overwrite))
    results = Path(job_dir) / "results"
    for task in tasks:
        name = task.metadata.name
        identity = {**job_ident, "task": task_identity(task)}
        result.identities[name] = identity
        path = results / f"{name}.json"
        old = _read_row(path) if path.exists() and not overwrite else None
        if old is not None and old.get("row_key") == row_key(identity):
            missing = [Path(f).name for f in (required(task) if required else []) if not Path(f).exists()]
            if not missing:
                result.reused[name] = old
                continue
            result.stale[name] = [f"missing {f}" for f in missing]
        elif old is not None:
            result.stale[name] = _changed(old.get("identity"), identity)
        result.todo.append(task)
    if result.reused:
        log.info(
            "reusing %d result(s) already in %s: %s (overwrite=true recomputes them)",
            len(result.reused), results, ", ".join(result.reused),
        )
    for name, fields in result.stale.items():
        if fields and fields[0].startswith("missing "):
            log.info("%s: the stored result is incomplete (%s); computing it again", name, ", ".join(fields))
        else:
            log.info("%s: the stored result is stale (changed: %s); computing it again", name, ", ".join(fields))
    if overwrite and results.is_dir() and any(results.glob("*.json")):
        log.info("overwrite=true: computing every dataset again")
    return result


def foreign_rows(job_dir: Path, job_ident: Mapping, tasks: Sequence = ()) -> dict[str, list[str]]:
    """Rows in ``job_dir/results`` computed with another job config (model, prompt, emb, α, data source, code, ...),
    whatever their task, or, for the ``tasks`` of this job, with other evaluated splits / subsets or generated data
    (``CONFIG_TASK_FIELDS``): {task name: the identity fields that differ}. A dir holds one config's rows, so that its
    results/ and results.csv never mix two configs: the runner refuses to replace them unless ``overwrite=true``."""
    found = {}
    ours = {t.metadata.name: task_identity(t) for t in tasks}
    for path in sorted((Path(job_dir) / "results").glob("*.json")):
        row = _read_row(path, quiet=True)
        if row is None:
            continue  # unreadable: recomputed (plan says so)
        identity = row.get("identity")
        old = {k: v for k, v in identity.items() if k != "task"} if isinstance(identity, Mapping) else None
        fields = _changed(old, dict(job_ident))
        name = str(row.get("task") or path.stem)
        if old is not None and name in ours:
            was = identity.get("task") if isinstance(identity.get("task"), Mapping) else {}
            fields += [f"task.{k}" for k in CONFIG_TASK_FIELDS
                       if json.dumps(was.get(k), sort_keys=True, default=str)
                       != json.dumps(ours[name].get(k), sort_keys=True, default=str)]
        if fields:
            found[name] = fields
    return found


def set_aside(job_dir: Path, names) -> Path:
    """Move the rows of ``names`` (and their predictions) from ``job_dir`` to ``job_dir/replaced/<run_uid>/``."""
    job_dir = Path(job_dir)
    dest = job_dir / "replaced" / RUN_UID
    for name in names:
        for sub, file in (("results", f"{name}.json"), ("predictions", f"{name}_predictions.json")):
            src = job_dir / sub / file
            if src.exists():
                (dest / sub).mkdir(parents=True, exist_ok=True)
                src.replace(dest / sub / file)
    return dest
