"""MoEE as an mteb model: a ModelMeta with real metadata and a loader, for one's own ``mteb.evaluate`` scripts.

    import mteb
    from moee_exp.mteb_model import get_moee_model
    model = get_moee_model("allenai/OLMoE-1B-7B-0924", kind="moee_sum", alpha=0.5, prompt="prompteol")
    result = mteb.evaluate(model, mteb.get_tasks(tasks=["STS12"]))

The metadata is read from the checkpoint's config without loading its weights (the model is built on the meta
device): parameter counts of the base model MoEE runs (no LM head), embedding dimension of the emb kind, MoE
active parameters (routed experts counted at top-k / n_experts). The loader returns the runner's own encoder
(moee_exp.scoring.encoder.MoEEEncoder over a moee_exp.features.featurize.Featurizer), so scores equal the runner's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import torch
from mteb.models.model_meta import ModelMeta, ScoringFunction

from ..features.featurize import Featurizer, model_path
from ..features.identity import hub_commit
from ..features.instructions import Instructions
from ..features.loading import ModelConfig, register_own_models
from ..features.prompts import TEMPLATES, check_template
from ..features.routers import find_routers, text_config
from ..jobs.config import ProtocolConfig
from ..scoring.encoder import MoEEEncoder
from ..scoring.fuse import KINDS, EmbConfig

PAPER = "https://arxiv.org/abs/2410.10814"
CITATION = """@inproceedings{li2025moee,
  title={Your Mixture-of-Experts LLM Is Secretly an Embedding Model For Free},
  author={Ziyue Li and Tianyi Zhou},
  booktitle={The Thirteenth International Conference on Learning Representations (ICLR)},
  year={2025},
  url={https://arxiv.org/abs/2410.10814}
}"""
TOP_K_ATTRS = ("num_experts_per_tok", "moe_top_k", "top_k")  # config names of the experts used per token
EMB_KEYS = tuple(EmbConfig.__dataclass_fields__)  # kind, alpha, rw_activation, standardize, ...
MODEL_KEYS = tuple(
    k for k in ModelConfig.__dataclass_fields__ if k not in ("name", "name_or_path", "tiny", "cache_dir")
)


def architecture_facts(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> dict:
    """Parameter counts and RW shape of a checkpoint, from its config alone (a weightless copy on the meta device)."""
    from transformers import AutoConfig, AutoModel

    register_own_models()
    config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    routers = find_routers(model)
    n_experts = routers[0].module.weight.shape[0]
    modules = dict(model.named_modules())
    routed = 0  # parameters of the routed experts: stacked (n_experts, ...) tensors or a ModuleList of n_experts
    for router in routers:
        block = modules[router.name.rpartition(".")[0]]
        for child in block.children():
            if child is router.module:
                continue
            if isinstance(child, torch.nn.ModuleList) and len(child) == n_experts:
                routed += sum(p.numel() for p in child.parameters())
            else:
                routed += sum(p.numel() for p in child.parameters() if p.ndim == 3 and p.shape[0] == n_experts)
    cfg = text_config(config)
    top_k = next((getattr(cfg, a) for a in TOP_K_ATTRS if isinstance(getattr(cfg, a, None), int)), None)
    n_parameters = sum(p.numel() for p in model.parameters())
    n_embedding = model.get_input_embeddings().weight.numel()
    n_active = None if top_k is None else round(n_parameters - n_embedding - routed * (1 - top_k / n_experts))
    return {
        "n_parameters": n_parameters,
        "n_embedding_parameters": n_embedding,
        "n_active_parameters": n_active,
        "hidden_size": cfg.hidden_size,
        "n_moe_layers": len(routers),
        "n_experts": n_experts,
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", None),
    }


def embedding_dim(kind: str, facts: Mapping) -> int:
    hs, rw = facts["hidden_size"], facts["n_moe_layers"] * facts["n_experts"]
    return {"hs": hs, "rw": rw}.get(kind, hs + rw)


def model_name(model_cfg: Mapping, emb: Mapping, prompt: str, protocol: Mapping | None = None) -> str:
    """'moee/<checkpoint>-<emb kind>[-a<alpha>]-<prompt>-<protocol>[-<non-default emb / protocol knobs>]': one name
    per configuration, so each lands in its own folder of mteb's result layout and mteb's loaders need no
    experiment settings."""
    protocol = _protocol(protocol)
    base = model_cfg.get("name") or Path(str(model_cfg["name_or_path"]).rstrip("/")).name
    parts = [base, emb["kind"]]
    if emb["kind"] == "moee_sum":
        alpha = emb["alpha"]
        parts.append(f"a{alpha:g}" if isinstance(alpha, (int, float)) else f"a{alpha}")
    parts.append(prompt)
    parts.append(protocol["name"])
    defaults = EmbConfig()
    parts += [f"{k}={emb[k]}" for k in EMB_KEYS if k not in ("kind", "alpha") and emb[k] != getattr(defaults, k)]
    # the protocol's own knobs where they differ from what its name implies (clean: instructions off, clean text)
    named = {"instructions": "e5" if protocol["name"] == "paper" else "none",
             "text": protocol["name"]}  # fmt: skip
    parts += [f"{k}={protocol[k]}" for k, v in named.items() if protocol[k] != v]
    return "moee/" + "-".join(str(p).replace("/", "_") for p in parts)


def moee_model_meta(
    model_name_or_path: str,
    *,
    prompt: str = "prompteol",
    template: str | None = None,
    normalize: bool = True,
    name: str | None = None,
    protocol: Mapping | None = None,
    **kwargs,
) -> ModelMeta:
    """The ModelMeta of MoEE on one checkpoint × emb × prompt; ``kwargs`` are the model and emb config's keys
    (``revision``, ``dtype``, ``max_length``, ...; ``kind``, ``alpha``, ``rw_activation``, ...). ``protocol`` (the
    protocol group's keys, conf/protocol/) is ``clean`` unless given: e.g. ``{"instructions": "e5"}`` adds the E5
    instructions; its standardization / activation / quantization are the emb and model keys above."""
    protocol = _protocol(protocol)
    if protocol["sum_scoring"] == "paper" and kwargs.get("kind", "moee_sum") == "moee_sum":
        raise ValueError("sum_scoring='paper' is the runner's own scoring (moee_exp.scoring.paper_scoring); mteb's "
                         "evaluators score a similarity sum: use sum_scoring='similarity' here")
    unknown = set(kwargs) - set(MODEL_KEYS) - set(EMB_KEYS)
    if unknown:
        raise TypeError(f"unknown argument(s) {sorted(unknown)}; model keys: {MODEL_KEYS}, emb keys: {EMB_KEYS}")
    emb = {**EmbConfig().__dict__, **{k: v for k, v in kwargs.items() if k in EMB_KEYS}}
    if emb["alpha"] is None:  # the runner's α lives in the weights group; here 1.0 unless given
        emb["alpha"] = 1.0
    if emb["kind"] not in KINDS:
        raise ValueError(f"kind={emb['kind']!r} is not one of {KINDS}")
    model_cfg = {**ModelConfig().__dict__, **{k: v for k, v in kwargs.items() if k in MODEL_KEYS}}
    model_cfg.update(name_or_path=str(model_name_or_path), name=name)
    del model_cfg["cache_dir"]
    template = check_template(template) if template else TEMPLATES[prompt]
    facts = architecture_facts(model_cfg["name_or_path"], model_cfg["revision"], model_cfg["trust_remote_code"])
    hub_id = None if Path(model_cfg["name_or_path"]).expanduser().exists() else model_cfg["name_or_path"]
    max_tokens = min(int(model_cfg["max_length"]), facts["max_position_embeddings"] or int(model_cfg["max_length"]))
    return ModelMeta(
        loader=load_moee_encoder,
        loader_kwargs={"model_cfg": model_cfg, "emb": emb, "template": template, "normalize": normalize,
                       "protocol": protocol},
        name=model_name(model_cfg, emb, prompt, protocol),
        # a hub id's revision: the commit it resolves to in the HF cache where known; a local dir has none
        revision=(hub_commit(hub_id, model_cfg["revision"]) or model_cfg["revision"] or "main") if hub_id else "local",
        release_date=None,
        languages=None,
        n_parameters=facts["n_parameters"],
        n_embedding_parameters=facts["n_embedding_parameters"],
        n_active_parameters_override=facts["n_active_parameters"],
        memory_usage_mb=None,
        max_tokens=max_tokens,
        embed_dim=embedding_dim(emb["kind"], facts),
        license=None,
        open_weights=True,
        public_training_code=None,  # training-free: MoEE reads a pretrained MoE LLM as it is
        public_training_data=None,
        framework=["PyTorch", "Transformers"],
        reference=PAPER,
        # cosine, as the runner scores; for moee_sum it is (cos HS + alpha cos RW) / (1 + alpha), see moee_exp.scoring.fuse
        similarity_fn_name=ScoringFunction.COSINE,
        # mteb counts a fixed input format ("query: {text}") as instructions; "none" is the bare quoted text
        use_instructions=template != TEMPLATES["none"] or protocol["instructions"] != "none",
        training_datasets=None,  # no finetuning; what the base LLM was pretrained on is not listed here
        adapted_from=hub_id,
        citation=CITATION,
    )


def load_moee_encoder(name: str, revision: str | None = None, *, model_cfg, emb, template, normalize=True, device=None,
                      protocol=None, **emb_overrides) -> MoEEEncoder:  # fmt: skip
    """mteb's loader protocol (name, revision, **loader_kwargs): the runner's encoder for this configuration.
    Keywords given to ``ModelMeta.load_model`` (e.g. ``alpha=0.3``) override the emb config."""
    model_cfg = dict(model_cfg)
    if device is not None:
        model_cfg["device"] = device
    emb = {**emb, **emb_overrides}
    protocol = _protocol(protocol)
    featurizer = Featurizer(
        model_cfg, template, normalize, progress=False, features=(emb["hs_feature"], emb["rw_feature"]),
        text_mode=protocol["text"],
    )
    fuse_kwargs = {k: v for k, v in emb.items() if k != "kind"}
    instructions = Instructions(protocol["instructions"], protocol["instruction_table"], protocol["instruction_format"])
    return MoEEEncoder(featurizer, emb["kind"], name=name, revision=revision, instructions=instructions,
                       **fuse_kwargs)


def _protocol(protocol: Mapping | None) -> dict:
    """The protocol group's keys, ``clean``'s defaults (ProtocolConfig) for those not given."""
    out = {**ProtocolConfig().__dict__, **dict(protocol or {})}
    out["instruction_table"] = dict(out["instruction_table"] or {})
    return out


def get_moee_model(model_name_or_path: str, **kwargs) -> MoEEEncoder:
    """An mteb model (MoEEEncoder with ``moee_model_meta(model_name_or_path, **kwargs)`` as its metadata)."""
    return moee_model_meta(model_name_or_path, **kwargs).load_model()


def runner_model_meta(job) -> ModelMeta:
    """The same metadata for a runner job (a moee_exp.jobs.config.Job: its model, emb, prompt, protocol, weights)."""
    path = model_path(job.model)  # the tiny model's dir, built on first use
    kwargs = {k: getattr(job.model, k) for k in MODEL_KEYS}
    protocol = {f.name: getattr(job.protocol, f.name) for f in fields(job.protocol) if f.name != "sum_scoring"}
    return moee_model_meta(
        path, prompt=job.prompt.name, template=job.template if job.prompt.template else None,
        normalize=job.prompt.normalize, name=job.model.name, **kwargs, protocol=protocol,
        **{k: getattr(job.emb, k) for k in EMB_KEYS if k != "alpha"}, alpha=job_alpha(job.resolved),
    )  # fmt: skip


def job_alpha(resolved: Mapping):
    """The job's α from the weights group: a number for fixed/grid, the option's name for auto/dev (chosen per task)."""
    weights = resolved.get("weights") or {}
    if weights.get("name", "fixed") in ("fixed", "grid"):
        return float(weights.get("alpha", 1.0))
    return weights["name"]
