"""Results of a job: local files first (one JSON per dataset, written atomically), then W&B.

Job dir layout:  config.yaml (resolved)  results/<task>.json  results.csv  predictions/  wandb/ (offline runs)
Scores are stored as mteb reports them (0..1); tables show them x100 like the paper.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from ..checks import Checked, choice
from ..errors import ConfigError, error_line
from ..faults import DENIED, SPACE, as_os_error, is_write_fault, write_error
from ..files import atomic_write

log = logging.getLogger(__name__)


@dataclass
class LoggerConfig(Checked):
    group = "logger"

    backend: str = field(default="none", metadata=choice(("wandb", "none")))
    project: str = "moee"
    entity: str | None = None
    mode: str = field(default="offline", metadata=choice(("offline", "online")))
    tags: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.backend != "wandb":
            return
        # W&B's own rule for project names (wandb_settings.validate_project), checked before the model runs
        p = self.project
        if not p or len(p) > 128 or any(c in p for c in "/\\#?%:"):
            raise ConfigError(f"logger.project={p!r} is not a W&B project name: 1-128 characters, none of / \\ # ? % :")
        if any(not str(tag).strip() for tag in self.tags):
            raise ConfigError(f"logger.tags={list(self.tags)!r} has an empty tag: W&B tags are 1-64 characters")


def write_job_file(path: Path, text: str) -> None:
    """A file of the job (a row, the results table, config.yaml), written atomically (``files.atomic_write``), so a
    killed job never leaves a half-written one. A write that fails (full disk, quota, file-size limit, unwritable
    dir) keeps the old file and raises WriteError naming hydra.run.dir, the setting that moves it."""
    try:
        atomic_write(path, text)
    except BaseException as err:  # a signal (moee_exp.faults.Preempted) mid-write is raised as it came
        if is_write_fault(err):
            raise write_error(path, err) from None
        raise


def guard_hydra_writes() -> None:
    """Hydra writes the job's ``.hydra/*.yaml`` before our code runs: a full disk, a quota or a file-size limit there
    becomes our one ``error:`` line (exit 2) instead of Hydra's traceback. Installed once by run.py."""
    import hydra.core.utils as hydra_utils

    original = hydra_utils._save_config
    if getattr(original, "moee_guarded", False):
        return

    def save_config(cfg, filename, output_dir):
        try:
            original(cfg, filename, output_dir)
        except OSError as err:
            if not is_write_fault(err):
                raise
            print(error_line(write_error(Path(output_dir) / filename, err)), file=sys.stderr, flush=True)
            raise SystemExit(2) from None  # (Hydra's report catches Exception only: this line stays the only one)

    save_config.moee_guarded = True
    hydra_utils._save_config = save_config


def write_row(job_dir: Path, row: Mapping) -> Path:
    path = Path(job_dir) / "results" / f"{row['task']}.json"
    write_job_file(path, json.dumps(row, indent=1, default=str))
    return path


def read_rows(job_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(job_dir) / "results").glob("*.json"))]


def summarize(rows: list[Mapping]) -> tuple[pd.DataFrame, pd.Series, float]:
    """Per-dataset table (x100), per-type averages, and Avg = mean of the type averages (the paper's Avg)."""
    df = pd.DataFrame(rows)[["task_type", "task", "main_score_name", "main_score"]]
    df = df.assign(score=df.main_score * 100).drop(columns="main_score").sort_values(["task_type", "task"])
    by_type = df.groupby("task_type")["score"].mean()
    return df.reset_index(drop=True), by_type, float(by_type.mean())


def format_summary(rows: list[Mapping]) -> str:
    df, by_type, avg = summarize(rows)
    types = by_type.to_frame("score").reset_index()
    return (
        f"{df.to_string(index=False, float_format='%.2f')}\n\n"
        f"{types.to_string(index=False, float_format='%.2f')}\n\nAvg (mean of task types): {avg:.2f}"
    )


def write_table(job_dir: Path, rows: list[Mapping]) -> Path:
    path = Path(job_dir) / "results.csv"
    df = pd.DataFrame(rows).drop(columns=["scores", "identity"], errors="ignore")
    if "alpha_info" in df:  # how α was chosen (spreads, dev scores), as JSON in its cell
        df["alpha_info"] = [json.dumps(v, sort_keys=True) if isinstance(v, Mapping) else v for v in df.alpha_info]
    write_job_file(path, df.to_csv(index=False))
    return path


# ---------------------------------------------------------------- W&B


SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def redact(text: str) -> str:
    """``text`` with the value of every secret environment variable replaced by ***."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return text


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class WandbLogger:
    """One W&B run per job. Offline unless asked for online *and* a key is present; never prompts, never blocks.

    The run is opened when the job starts (so its console log holds the whole job); each dataset's score reaches it
    only after the dataset's result file is on disk, and if it cannot be opened the job goes on with local results.
    """

    def __init__(self, open_run):
        self._open, self.run, self._failed = open_run, None, False

    def _ready(self) -> bool:
        if self.run is None and not self._failed:
            self.run = self._open()
            self._failed = self.run is None
        return self.run is not None

    def log_row(self, row: Mapping) -> None:
        if self._ready():
            data = {f"{row['task_type']}/{row['task']}": row["main_score"] * 100}
            if row.get("alpha") is not None:  # the α this dataset was scored with (per task for weights auto/dev)
                data[f"alpha/{row['task']}"] = row["alpha"]
            self.run.log(data)

    def log_summary(self, rows: list[Mapping]) -> None:
        if not self._ready():
            return
        import wandb

        df, by_type, avg = summarize(rows)
        for r in df.itertuples():  # each dataset once, under the key log_row used (<task type>/<task>)
            self.run.summary[f"{r.task_type}/{r.task}"] = r.score
        for row in rows:  # the α each dataset was scored with (per task for weights auto/dev)
            if row.get("alpha") is not None:
                self.run.summary[f"alpha/{row['task']}"] = row["alpha"]
        for task_type, score in by_type.items():
            self.run.summary[f"type/{task_type}"] = score
        self.run.summary["avg"] = avg
        self.run.log({"scores": wandb.Table(dataframe=df)})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


PROBE_BYTES = 256 * 1024  # what W&B writes into the job dir first (run files, debug logs), at least


def _probe_space(run_dir: Path) -> None:
    """Write and remove PROBE_BYTES in the dir W&B writes into: raises the OSError of a full disk, a quota or a
    file-size limit before W&B starts (W&B itself meets it as thousands of failed log writes)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / f".space-probe.{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())  # a filesystem that allocates at flush time (delayed allocation) reports here
    finally:
        with suppress(OSError):
            probe.unlink()


@contextmanager
def _quiet_logging_errors():
    """A log record that cannot be written (a full disk under W&B's debug log) is dropped, not printed as a
    '--- Logging error ---' traceback per record; restored afterwards."""
    before = logging.raiseExceptions
    logging.raiseExceptions = False
    try:
        yield
    finally:
        logging.raiseExceptions = before


def _unavailable(err: BaseException) -> None:
    """The one line that says W&B is off for this job, and why."""
    os_err = as_os_error(err) if is_write_fault(err) else None
    if os_err is not None:
        what = SPACE.get(os_err.errno) or DENIED.get(os_err.errno) or os_err.strerror
        log.warning("W&B not started: cannot write %s (%s): results are local only", os_err.filename or "its files",
                    what)
    else:
        log.warning("W&B unavailable (%s: %s): results are local only", err.__class__.__name__, redact(str(err)))


def _open_run(logger: LoggerConfig, kwargs: dict):
    """A wandb run (online if asked and possible, else offline), or None if W&B cannot be used at all."""
    try:
        _probe_space(Path(kwargs["dir"]) / "wandb")
    except OSError as err:
        _unavailable(err)
        return None
    return _init_run(logger, kwargs)


def _init_run(logger: LoggerConfig, kwargs: dict):
    mode = logger.mode
    if mode == "online" and not _has_wandb_key():
        log.warning("logger.mode=online but no W&B API key (WANDB_API_KEY or `wandb login`): logging offline")
        mode = "offline"
    os.environ["WANDB_MODE"] = mode  # the env var, not only the init argument, keeps offline runs off the network
    run, error = None, None
    try:
        import wandb

        _move_wandb_staging_dirs(kwargs["dir"])
        run = wandb.init(mode=mode, **kwargs)
    except Exception as err:  # noqa: BLE001  online but unreachable (after WANDB_INIT_TIMEOUT, default 90 s)
        error = err
    if run is None and mode == "online":
        log.warning("W&B online init failed (%s): logging offline", error.__class__.__name__)
        os.environ["WANDB_MODE"] = "offline"
        try:
            run = wandb.init(mode="offline", **kwargs)
        except Exception as err:  # noqa: BLE001
            error = err
    if run is None:  # W&B trouble never costs a result: the job goes on with local results only
        _unavailable(error)
    return run


@contextmanager
def wandb_logger(logger: LoggerConfig | Mapping, *, config: Mapping, job_dir: Path, group: str, name: str,
                 tags=(), run_id: str | None = None):
    """The job's W&B run (or None with logger=none). ``run_id``: the same job resumed into its dir continues its own
    run (W&B's resume="allow"; offline runs of one id sync into one run) instead of opening a second of that name."""
    logger = logger if isinstance(logger, LoggerConfig) else LoggerConfig(**logger)
    if logger.backend != "wandb":
        yield None
        return
    kwargs = dict(
        project=logger.project,
        entity=logger.entity,
        group=group[-128:],
        name=name,
        tags=list(dict.fromkeys(str(t)[:64] for t in [*tags, *(logger.tags or [])])),
        config=_flatten(config),
        dir=str(job_dir),
        **({"id": run_id, "resume": "allow"} if run_id else {}),
    )
    run = WandbLogger(lambda: _open_run(logger, kwargs))
    # while W&B runs, a log record that cannot be written (W&B's debug logs on a disk that is full, or fills while
    # the job runs) is dropped instead of printed as a traceback per record
    with _quiet_logging_errors():
        run._ready()  # opened now: its console capture starts with the job
        try:
            yield run
        finally:
            try:
                run.finish()
            except Exception as err:  # noqa: BLE001  W&B trouble never costs a result (they are on disk)
                log.warning("W&B run not finished (%s: %s): results are local; `wandb sync` may upload them",
                            err.__class__.__name__, redact(str(err)))
            shutil.rmtree(Path(job_dir) / "wandb" / STAGING, ignore_errors=True)  # empty: wandb moved their files


STAGING = ".staging"


def _wandb_staging_dirs() -> list[tuple[str, tempfile.TemporaryDirectory]]:
    """wandb's process-wide staging dirs (tempfile.TemporaryDirectory objects made when wandb is imported):
    {tmp}/tmp*wandb-media and {tmp}/tmp*wandb-artifacts. wandb removes them only at a clean interpreter exit, so a
    job killed by a launcher, a timeout or SIGKILL leaves them in the system temp dir."""
    private = sys.modules.get("wandb.sdk.data_types._private")
    artifact = sys.modules.get("wandb.sdk.artifacts.artifact")
    found = {"media": getattr(private, "MEDIA_TMP", None),
             "artifacts": getattr(getattr(artifact, "Artifact", None), "_TMP_DIR", None)}
    return [(name, tmp) for name, tmp in found.items() if isinstance(tmp, tempfile.TemporaryDirectory)]


def _move_wandb_staging_dirs(job_dir) -> None:
    """Point wandb's staging dirs into the job's wandb/ dir for this job (wandb reads their path at every use), so
    even a killed job leaves nothing in the system temp dir; the dirs wandb made at import are removed."""
    for name, tmp in _wandb_staging_dirs():
        target = Path(job_dir) / "wandb" / STAGING / name
        if tmp.name != str(target):
            finalizer = getattr(tmp, "_finalizer", None)
            if finalizer is not None:  # its at-exit cleanup would fail on a dir removed here; we remove it instead
                finalizer.detach()
            shutil.rmtree(tmp.name, ignore_errors=True)
            tmp.name = str(target)
        target.mkdir(parents=True, exist_ok=True)
