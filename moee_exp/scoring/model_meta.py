"""MoEE's mteb metadata: a ModelMeta with real facts about the checkpoint and a loader, for one spec.

The metadata is read from the checkpoint's config without loading its weights (the model is built on the meta
device): parameter counts of the base model MoEE runs (no LM head), embedding dimension of the emb kind, MoE
active parameters (routed experts counted at top-k / n_experts). The loader builds the runner's own encoder from the
spec (moee_exp.scoring.spec.build_encoder), so scores equal the runner's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from mteb.models.model_meta import ModelMeta, ScoringFunction

from ..features.featurize import model_path
from ..features.identity import hub_commit
from ..features.loading import register_own_models
from ..features.prompts import TEMPLATES
from ..features.routers import find_routers, text_config
from .encoder import MoEEEncoder
from .spec import MoEESpec, build_encoder

PAPER = "https://arxiv.org/abs/2410.10814"
CITATION = """@inproceedings{li2025moee,
  title={Your Mixture-of-Experts LLM Is Secretly an Embedding Model For Free},
  author={Ziyue Li and Tianyi Zhou},
  booktitle={The Thirteenth International Conference on Learning Representations (ICLR)},
  year={2025},
  url={https://arxiv.org/abs/2410.10814}
}"""
TOP_K_ATTRS = ("num_experts_per_tok", "moe_top_k", "top_k")  # config names of the experts used per token
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


def model_meta(spec: MoEESpec) -> ModelMeta:
    """The ModelMeta of one spec: named 'moee/<spec name>', its loader builds the spec's encoder."""
    path = model_path(spec.model)  # a tiny model's dir, built on first use
    m = spec.model
    facts = architecture_facts(path, m.revision, m.trust_remote_code)
    hub_id = None if Path(path).expanduser().exists() else path
    max_tokens = min(int(m.max_length), facts["max_position_embeddings"] or int(m.max_length))
    return ModelMeta(
        loader=load_moee_encoder,
        loader_kwargs={"spec": spec.to_dict()},
        name=f"moee/{spec.name}",
        # a hub id's revision: the commit it resolves to in the HF cache where known; a local dir has none
        revision=(hub_commit(hub_id, m.revision) or m.revision or "main") if hub_id else "local",
        release_date=None,
        languages=None,
        n_parameters=facts["n_parameters"],
        n_embedding_parameters=facts["n_embedding_parameters"],
        n_active_parameters_override=facts["n_active_parameters"],
        memory_usage_mb=None,
        max_tokens=max_tokens,
        embed_dim=spec.kind.dim(facts["hidden_size"], facts["n_moe_layers"] * facts["n_experts"]),
        license=None,
        open_weights=True,
        public_training_code=None,  # training-free: MoEE reads a pretrained MoE LLM as it is
        public_training_data=None,
        framework=["PyTorch", "Transformers"],
        reference=PAPER,
        # cosine, as the runner scores; for moee_sum it is (cos HS + alpha cos RW) / (1 + alpha), see scoring.fuse
        similarity_fn_name=ScoringFunction.COSINE,
        # mteb counts a fixed input format ("query: {text}") as instructions; "none" is the bare quoted text
        use_instructions=spec.template != TEMPLATES["none"] or spec.protocol.instructions != "none",
        training_datasets=None,  # no finetuning; what the base LLM was pretrained on is not listed here
        adapted_from=hub_id,
        citation=CITATION,
    )


def load_moee_encoder(name: str, revision: str | None = None, *, spec: dict, device: str | None = None,
                      **emb) -> MoEEEncoder:
    """mteb's loader protocol (name, revision, **loader_kwargs): the spec's encoder. ``device`` and emb keywords
    given to ``ModelMeta.load_model`` (e.g. ``alpha=0.3``, ``standardize="text"``) override the spec's."""
    alpha = emb.pop("alpha", spec.get("alpha", 1.0))
    model = {**spec["model"], **({"device": device} if device is not None else {})}
    data = {**spec, "model": model, "emb": {**spec["emb"], **emb}, "alpha": alpha}
    return build_encoder(MoEESpec.from_dict(data), revision=revision)
