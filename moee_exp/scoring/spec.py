"""One MoEE embedding configuration, ``MoEESpec``: the checkpoint (model), how texts are prompted (prompt), which
embedding (emb, α) and under which protocol; and the one builder of an encoder from it, ``build_encoder``.

The runner's job, the embed CLI, ``embed_texts``, the sentence-transformers module and the mteb model are all built
from a spec, so each default and each check is written once, in the group schemas the spec holds (each checks
itself when built, moee_exp.checks). ``name`` names a configuration (W&B runs, printed tables, mteb models);
``to_dict`` is what a saved sentence-transformers module and an mteb loader hold, and ``identity`` is what a result
row's key holds.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..checks import Checked, choice
from ..errors import ConfigError
from ..features.identity import model_identity
from ..features.instructions import FORMATS, MODES, Instructions
from ..features.loading import ModelConfig
from ..features.prompts import TEXT_MODES, PromptConfig
from . import kinds
from .fuse import EmbConfig

PROTOCOLS = ("paper", "clean")
SUM_SCORINGS = ("similarity", "paper")
ALPHA_OPTIONS = ("auto", "dev")  # α chosen per task by the runner's weights group (moee_exp.scoring.weights)


@dataclass
class ProtocolConfig(Checked):
    """Which computation a job runs: ``paper`` (the public code's, conf/protocol/paper.yaml) or ``clean`` (batch-
    independent embeddings, a true similarity sum; conf/protocol/clean.yaml). The protocol files also set
    emb.standardize, emb.rw_activation and model.quantization / quantize_routers; each stays overridable."""

    group = "protocol"

    # recorded in every row, the run name, W&B and the mteb model name
    name: str = field(default="clean", metadata=choice(PROTOCOLS))
    # none | e5 (mteb metadata + our table; moee_exp.features.instructions) | custom
    instructions: str = field(default="none", metadata=choice(MODES))
    instruction_table: dict[str, Any] = field(default_factory=dict)  # task -> str | {query, document}
    # gritlm ("<|user|>\n{instruction}\n<|embed|>\n") | plain
    instruction_format: str = field(default="gritlm", metadata=choice(lambda: tuple(FORMATS)))
    # clean (strip, empty -> '.', cut at max_length) | paper (none of these: prompts.apply_prompt)
    text: str = field(default="clean", metadata=choice(TEXT_MODES))
    # an α-weighted kind (moee_sum): similarity (a true similarity sum) | paper (moee_exp.scoring.paper_scoring)
    sum_scoring: str = field(default="similarity", metadata=choice(SUM_SCORINGS))

    def check(self) -> None:
        for task, entry in self.instruction_table.items():
            ok = isinstance(entry, str) or (
                hasattr(entry, "items") and set(entry) <= {"query", "document"}
                and all(isinstance(v, str) for v in entry.values())
            )
            if not ok:
                raise ConfigError(
                    f"protocol.instruction_table.{task}={entry!r} must be a string or {{query: ..., document: ...}}"
                )
        if self.instructions == "custom" and not self.instruction_table:
            raise ConfigError("protocol.instructions=custom needs protocol.instruction_table={task: instruction, ...}")

    def implied(self) -> dict:
        """The protocol's own settings that its name implies (paper: E5 instructions, the public code's text
        handling and MoEE(sum) scoring; clean: none of these)."""
        paper = self.name == "paper"
        return {"instructions": "e5" if paper else "none", "text": self.name,
                "sum_scoring": "paper" if paper else "similarity"}


_GROUPS = {"model": ModelConfig, "prompt": PromptConfig, "emb": EmbConfig}


def _flat_keys() -> dict[str, str]:
    """Keyword -> group, for the flat keywords the APIs take: every field of model, prompt and emb but the names
    (``prompt=`` is the prompt's name) and emb.alpha (``alpha=`` is the spec's)."""
    out: dict[str, str] = {}
    for group, schema in _GROUPS.items():
        for f in fields(schema):
            if f.name not in ("name", "alpha"):
                out[f.name] = group
    return out


@dataclass(frozen=True)
class MoEESpec:
    """One embedding configuration. Built from the runner's config (``moee_exp.jobs.config.read_job``), from flat
    keywords (``MoEESpec.create``) or from ``to_dict``'s output (``MoEESpec.from_dict``); checked when built."""

    model: ModelConfig
    prompt: PromptConfig = field(default_factory=PromptConfig)
    emb: EmbConfig = field(default_factory=EmbConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    # MoEE(sum)'s similarity weight: a number, or auto / dev (the runner's weights group chooses it per task)
    alpha: float | str = 1.0

    def __post_init__(self):
        if not self.model.tiny and not self.model.name_or_path:
            raise ConfigError(
                "model.name_or_path is empty: set a hub id (e.g. allenai/OLMoE-1B-7B-0924) or a local dir")
        a = self.alpha
        if isinstance(a, str) and a not in ALPHA_OPTIONS or not isinstance(a, str) and (
                isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a < 0):
            raise ConfigError(f"alpha={a!r} must be a finite number >= 0 (or one of {', '.join(ALPHA_OPTIONS)})")

    @classmethod
    def create(cls, model_name_or_path: str, *, prompt: str = PromptConfig.name, alpha: float | str = 1.0,
               protocol: dict | ProtocolConfig | None = None, name: str | None = None, **keys) -> MoEESpec:
        """A spec from flat keywords, each a field of the model, prompt or emb group named as there (``dtype``,
        ``max_length``, ``template``, ``kind``, ``standardize`` (default: the kind's), ...); ``prompt`` is the
        prompt's name, ``protocol`` the protocol group's fields (clean unless given), ``name`` the model's short name
        (default: the last part of the path)."""
        table = _flat_keys()
        unknown = sorted(set(keys) - set(table))
        if unknown:
            raise TypeError(f"unknown argument(s) {unknown}; the keys are those of the model, prompt and emb groups: "
                            f"{', '.join(table)}")
        if "standardize" not in keys and keys.get("kind", EmbConfig.kind) in kinds.names():
            keys["standardize"] = kinds.get(keys.get("kind", EmbConfig.kind)).standardize  # the kind's default
        by_group: dict[str, dict] = {g: {} for g in _GROUPS}
        for key, value in keys.items():
            by_group[table[key]][key] = value
        path = str(model_name_or_path)
        model = ModelConfig(name=name or Path(path.rstrip("/")).name or path, name_or_path=path, **by_group["model"])
        if not isinstance(protocol, ProtocolConfig):
            protocol = ProtocolConfig(**dict(protocol or {}))
        return cls(model, PromptConfig(name=prompt, **by_group["prompt"]), EmbConfig(**by_group["emb"]), protocol,
                   float(alpha) if not isinstance(alpha, str) else alpha)

    def to_dict(self) -> dict:
        """Plain values of every field (JSON-ready): what ``from_dict`` builds the same spec from."""
        return {"model": asdict(self.model), "prompt": asdict(self.prompt), "emb": asdict(self.emb),
                "protocol": asdict(self.protocol), "alpha": self.alpha}

    @classmethod
    def from_dict(cls, data: dict) -> MoEESpec:
        return cls(ModelConfig(**data["model"]), PromptConfig(**data["prompt"]), EmbConfig(**data["emb"]),
                   ProtocolConfig(**data["protocol"]), data.get("alpha", 1.0))

    @property
    def kind(self) -> kinds.EmbKind:
        return kinds.get(self.emb.kind)

    @property
    def template(self) -> str:
        return self.prompt.text_template

    @property
    def instructions(self) -> Instructions:
        p = self.protocol
        return Instructions(p.instructions, p.instruction_table, p.instruction_format)

    @property
    def paper_sum(self) -> bool:
        """An α-weighted kind scored as the public code does (moee_exp.scoring.paper_scoring), not by mteb."""
        return self.kind.weighted and self.protocol.sum_scoring == "paper"

    def implied(self) -> dict[str, dict]:
        """Per group, the settings the kind and protocol imply, or the schema's default where they imply nothing:
        what the name leaves out."""
        paper, m = self.protocol.name == "paper", self.model
        return {
            "model": {"dtype": ModelConfig.dtype, "max_length": ModelConfig.max_length,
                      "quantization": m.paper_quantization if paper else ModelConfig.quantization,
                      "quantize_routers": m.paper_quantize_routers if paper else ModelConfig.quantize_routers},
            "prompt": {"normalize": PromptConfig.normalize},
            "emb": {"standardize": self.kind.paper_standardize if paper else self.kind.standardize,
                    "rw_activation": m.paper_rw_activation if paper else EmbConfig.rw_activation,
                    **{k: getattr(EmbConfig, k) for k in ("standardize_batch_size", "hs_feature", "rw_feature")}},
            "protocol": {**self.protocol.implied(), "instruction_format": ProtocolConfig.instruction_format,
                         "instruction_table": {}},
        }

    @property
    def name(self) -> str:
        """'<model>-<emb kind>[-a<alpha>]-<prompt>-<protocol>[-<settings the kind and protocol do not imply>]': one
        name per configuration (the W&B run, the printed table, the mteb model 'moee/<name>', whose result folder
        must never hold two computations)."""
        parts = [self.model.name, self.emb.kind]
        if self.kind.weighted:
            parts.append(f"a{self.alpha:g}" if not isinstance(self.alpha, str) else self.alpha)
        template = self.prompt.template
        parts.append(self.prompt.name if not template else f"template{_short_hash(template)}")
        parts.append(self.protocol.name)
        for group, implied in self.implied().items():
            for key, value in implied.items():
                have = getattr(getattr(self, group), key)
                if have == value or (key == "sum_scoring" and not self.kind.weighted):
                    continue  # (sum_scoring: read by α-weighted kinds only)
                parts.append(f"{key}{_short_hash(have)}" if isinstance(have, dict) else f"{key}={have}")
        return "-".join(str(p).replace("/", "_") for p in parts)

    def identity(self) -> dict:
        """What of this spec changes the features and their embedding, as a result row's key holds it: the model's
        identity (moee_exp.features.identity), the prompt's template, every emb and protocol field. α is not here:
        a job's row key holds how its weights group chooses it (moee_exp.jobs.resume)."""
        return {"model": {**model_identity(self.model), "max_length": int(self.model.max_length)},
                "prompt": {"template": self.template, "normalize": bool(self.prompt.normalize)},
                "emb": asdict(self.emb), "protocol": asdict(self.protocol)}


def _short_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:6]


def build_encoder(spec: MoEESpec, *, cache=None, progress: bool = False, alpha: float | None = None,
                  revision: str | None = None, meta=None):
    """The mteb encoder of a spec (over a Featurizer that loads the model on first use): what the runner scores
    with, what the mteb model loads, and what the sentence-transformers module and the embed CLI encode with.
    ``alpha``: the α to start from where the spec's is chosen per task (auto / dev); ``meta``: its mteb ModelMeta
    (moee_exp.scoring.model_meta.model_meta), where the caller writes mteb's result layout."""
    from ..features.featurize import Featurizer  # (imported here: reading a config must not wait for mteb)
    from .encoder import MoEEEncoder

    featurizer = Featurizer(spec.model, spec.template, spec.prompt.normalize, progress=progress,
                            features=(spec.emb.hs_feature, spec.emb.rw_feature), cache=cache,
                            text_mode=spec.protocol.text)
    a = alpha if alpha is not None else (spec.alpha if not isinstance(spec.alpha, str) else 1.0)
    return MoEEEncoder(featurizer, spec.emb.kind, name=f"moee/{spec.name}", revision=revision or spec.model.revision,
                       instructions=spec.instructions, meta=meta, **spec.emb.fuse_kwargs(float(a)))
