"""The one place a composed Hydra config becomes a typed job: schemas registered, checked, pieces typed.

Each conf/<group>/*.yaml starts from its schema (``defaults: [base_<group>]``), so a misspelt key or a value of the
wrong type fails at composition. A schema lives beside the stage it configures (ModelConfig in features.loading,
CacheConfig in features.cache, PromptConfig in features.prompts, EmbConfig in scoring.fuse, WeightsConfig in
scoring.weights, LoggerConfig in jobs.record; here ProtocolConfig, which spans stages, and TasksConfig) and checks
its own values when it is built (moee_exp.checks). ``read_job`` resolves the config, builds each group's schema once,
checks what spans groups, and returns the Job whose typed pieces the runner hands to each stage: nothing downstream
reads the DictConfig again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ..checks import Checked, choice
from ..errors import ConfigError
from ..features.cache import CacheConfig
from ..features.loading import ModelConfig, check_device
from ..features.prompts import PromptConfig
from ..files import unwritable_dir
from ..scoring import kinds
from ..scoring.fuse import EmbConfig
from ..scoring.spec import ProtocolConfig, MoEESpec
from ..scoring.weights import WeightsConfig
from .record import LoggerConfig

TASK_DATA = ("real", "synthetic")
SYNTHETIC_SIZES = ("small", "real")  # moee_exp.scoring.synthetic_tasks.SIZES (not imported here: it imports datasets)


@dataclass
class SyntheticDataConfig:  # checked by TasksConfig, as tasks.synthetic.*
    size: str = field(default="small", metadata=choice(SYNTHETIC_SIZES))  # small (a few rows per split) | real
    seed: int = field(default=0, metadata={"min": 0})  # numpy's generators take no negative seed


@dataclass
class TasksConfig(Checked):
    group = "tasks"

    name: str = "custom"
    names: list[str] = field(default_factory=list)
    # An mteb benchmark (mteb.get_benchmark name): its tasks are taken as the benchmark defines them (its language
    # subsets and splits, e.g. STS17 en-en only in MTEB(eng, v2)), not as mteb.get_task(name) gives them.
    benchmark: str | None = None
    # real: each task's own data (HF hub or cache). synthetic: the same mteb task classes (splits, subsets,
    # evaluators, main scores) on generated data of their schema, offline: a dry run of a task set
    # (moee_exp/scoring/synthetic_tasks.py). Its scores mean nothing.
    data: str = field(default="real", metadata=choice(TASK_DATA))
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)

    def check(self) -> None:
        if not self.names:
            raise ConfigError("tasks.names is empty: pick a task set (tasks=demo, tasks=paper, tasks=sts, ...)")


PAPER_STANDARDIZE_RESOLVER = "moee.paper_standardize"


def paper_standardize(kind: str) -> str:
    """``${moee.paper_standardize:${emb.kind}}`` (conf/protocol/paper.yaml): the public code's standardization of
    that kind (moee_exp.scoring.kinds). An unknown kind resolves to none: emb.kind's own check names it."""
    try:
        return kinds.get(kind).paper_standardize
    except ValueError:
        return "none"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver(PAPER_STANDARDIZE_RESOLVER):
        OmegaConf.register_new_resolver(PAPER_STANDARDIZE_RESOLVER, paper_standardize)


register_resolvers()  # before any compose: importing the schemas registers them

_SCHEMAS = [
    ("model", ModelConfig),
    ("emb", EmbConfig),
    ("weights", WeightsConfig),
    ("prompt", PromptConfig),
    ("tasks", TasksConfig),
    ("logger", LoggerConfig),
    ("cache", CacheConfig),
    ("protocol", ProtocolConfig),
]


def register() -> None:
    """Store each group's schema in Hydra's ConfigStore (once: storing builds the structured config, ~8 ms each,
    and every read_job asks)."""
    cs = ConfigStore.instance()
    for group, node in _SCHEMAS:
        stored = cs.repo.get(group, {}).get(f"base_{group}.yaml")
        if stored is None or OmegaConf.get_type(stored.node) is not node:
            cs.store(group=group, name=f"base_{group}", node=_open_tables(node))


# Fields whose keys are the user's (task names): open to new keys under Hydra's struct mode, so that the README's
# `protocol.instruction_table={STS12: "..."}` works as written, without a leading +.
OPEN_TABLES = {ProtocolConfig: ("instruction_table",)}


def _open_tables(schema):
    if schema not in OPEN_TABLES:
        return schema
    node = OmegaConf.structured(schema)
    for name in OPEN_TABLES[schema]:
        OmegaConf.set_struct(node[name], False)
    return node


def schemas() -> dict[str, type]:
    """Every config group's typed schema as registered in Hydra's ConfigStore: {group: dataclass}.

    ``read_job`` builds each of them and the property-based tests (tests/test_fuzz.py) walk them, so a new group or
    key is checked and fuzzed without being listed anywhere.
    """
    register()
    out = {}
    for group, entries in ConfigStore.instance().repo.items():
        node = entries.get(f"base_{group}.yaml") if isinstance(entries, dict) else None
        schema = OmegaConf.get_type(node.node) if node is not None else None
        if is_dataclass(schema):
            out[group] = schema
    return out


def _check_interpolations(cfg) -> dict:
    """Every ${...} in the job's config resolves (hydra's own node aside: it resolves only inside a job). Returns
    each top-level key's value, resolved to plain Python (checked and kept by read_job: resolving walks the tree)."""
    resolved = {}
    for key in cfg:
        if key == "hydra":
            continue
        try:
            node = cfg[key]
            resolved[key] = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) \
                else node
        except InterpolationResolutionError as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(f"{err.full_key or key}: {reason}; fix or quote the ${{...}} in its value") from None
    return resolved


def _check_writable_dir(path, key: str) -> None:
    """A dir the job will write into: it, or the nearest existing parent, must be a writable dir."""
    problem = unwritable_dir(Path(str(path)).expanduser())
    if problem:
        probe, what = problem
        raise ConfigError(f"{key}={str(path)!r} cannot be used: {str(probe)!r} {what}; point {key} at a writable dir")


def template_of(prompt_cfg) -> str:
    """The prompt group's template (its own, or the paper's for its name), checked."""
    return PromptConfig(prompt_cfg.name, prompt_cfg.template, bool(prompt_cfg.normalize)).text_template


def _typed(cfg, resolved: dict) -> dict:
    """Each group as its schema (which checks its values as it is built): {group: instance}."""
    typed = {}
    for group, schema in schemas().items():
        node = cfg.get(group) if group in cfg else None
        if isinstance(node, DictConfig) and OmegaConf.get_type(node) is schema:
            typed[group] = OmegaConf.to_object(node)
        else:  # a group composed without its schema (a hand-made config)
            typed[group] = schema(**(resolved.get(group) or {}))
    return typed


def _check_switches(cfg) -> None:
    """The top-level keys (the root config has no schema)."""
    for key in ("overwrite", "progress"):
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r} must be true or false")
    predictions = cfg.get("predictions")
    if predictions is not None and (
        not isinstance(predictions, ListConfig) or not all(isinstance(t, str) for t in predictions)
    ):
        raise ConfigError(f"predictions={predictions!r} must be a list of mteb task types, e.g. [STS,Clustering] or []")
    if cfg.get("mteb_results") is not None and not isinstance(cfg.get("mteb_results"), str):
        raise ConfigError(f"mteb_results={cfg.get('mteb_results')!r} must be a dir (or null for off)")


def _read(cfg) -> tuple[dict, dict, MoEESpec]:
    """Resolve, build every group (each checks itself), then the spec (what spans groups)."""
    resolved = _check_interpolations(cfg)
    typed = _typed(cfg, resolved)
    _check_switches(cfg)
    weights = typed["weights"]
    spec = MoEESpec(typed["model"], typed["prompt"], typed["emb"], typed["protocol"], weights.alpha_label)
    return resolved, typed, spec


def validate(cfg) -> dict:
    """Raise ConfigError naming the key and the fix for any mistake in the config; return it resolved to plain
    Python, top-level key by key (hydra's node aside)."""
    return _read(cfg)[0]


def check_here(cfg) -> None:
    """The checks that depend on the machine a job runs on (not run by the sweep preflight, which may run on a
    login node): the device exists here, and the dirs the job writes into are writable."""
    check_device(cfg.model.device, "model.device")
    if cfg.model.tiny:  # a read-only dir that holds the model serves it (one that lacks it: one line at the build)
        _check_cache_dir(cfg.model.cache_dir, "model.cache_dir")
    if cfg.get("cache") is not None and cfg.cache.enabled:
        _check_cache_dir(cfg.cache.dir)
    if cfg.get("mteb_results"):
        _check_creatable_dir(cfg.mteb_results, "mteb_results")


def _check_creatable_dir(path, key: str) -> None:
    """A dir the job creates and writes into: made now (as the job would make it), so that a path through a file,
    an unwritable or a full disk is one line before the model loads, not a traceback after the first dataset."""
    _check_writable_dir(path, key)
    p = Path(str(path)).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{key}={str(path)!r} cannot be created ({err.strerror or err}); point {key} at a "
                          "writable dir, or set it to null") from None
    if not p.is_dir():
        raise ConfigError(f"{key}={str(path)!r} is not a dir; point {key} at a writable dir, or set it to null")


def _check_cache_dir(path, key: str = "cache.dir") -> None:
    """cache.dir must be writable, unless it is an existing dir this job can read: a read-only cache (a lab's shared
    features) serves every job whose features it holds; a job that misses one stops then (moee_exp.features.featurize)."""
    p = Path(str(path)).expanduser().absolute()
    if p.is_dir() and os.access(p, os.R_OK | os.X_OK):
        return
    _check_writable_dir(path, key)


@dataclass(frozen=True)
class Job:
    """One job's config, read once (``read_job``): the spec of the embedding it scores and the job's own pieces.

    ``resolved`` is the whole config as plain values, kept for the records that hold all of it (the job dir's
    config.yaml, the W&B run's config); no stage reads its settings from it.
    """

    spec: MoEESpec  # model, prompt, emb, protocol, α: moee_exp.scoring.spec
    weights: WeightsConfig
    tasks: TasksConfig
    logger: LoggerConfig
    cache: CacheConfig
    overwrite: bool
    progress: bool
    predictions: tuple[str, ...]  # task types whose per-item predictions are saved
    mteb_results: str | None  # a dir for mteb's own result layout, or None
    resolved: dict


def read_job(cfg, here: bool = True) -> Job:
    """The one place a composed Hydra config becomes a Job: every group built as its schema (each checks its own
    values), the spec (what spans groups) and, with ``here``, the checks of this machine (``check_here``). Raises
    ConfigError (one line) for any mistake, before any model loads."""
    resolved, typed, spec = _read(cfg)  # (hydra's own node, in a sweep callback's config, resolves only in a job)
    if here:
        check_here(cfg)
    return Job(
        spec=spec,
        weights=typed["weights"],
        tasks=typed["tasks"],
        logger=typed["logger"],
        cache=typed["cache"],
        overwrite=bool(cfg.get("overwrite", False)),
        progress=bool(cfg.get("progress", True)),
        predictions=tuple(cfg.get("predictions") or ()),
        mteb_results=cfg.get("mteb_results"),
        resolved=resolved,
    )
