"""MoEE as an mteb model: a ModelMeta with real metadata and a loader, for one's own ``mteb.evaluate`` scripts.

    import mteb
    from moee_exp.integrations.mteb_model import get_moee_model
    model = get_moee_model("allenai/OLMoE-1B-7B-0924", kind="moee_sum", alpha=0.5, prompt="prompteol")
    result = mteb.evaluate(model, mteb.get_tasks(tasks=["STS12"]))

The keywords are a spec's (moee_exp.scoring.spec.MoEESpec.create): the model, prompt and emb groups' fields, ``alpha``
and ``protocol``. The metadata and the loader are moee_exp.scoring.model_meta's, the runner's own.
"""

from __future__ import annotations

from mteb.models.model_meta import ModelMeta

from ..scoring.encoder import MoEEEncoder
from ..scoring.model_meta import architecture_facts, load_moee_encoder, model_meta  # noqa: F401 (public)
from ..scoring.spec import MoEESpec
from .api import resolve_model  # conf/model names (tiny, olmoe) too


def moee_spec(model_name_or_path: str, **keys) -> MoEESpec:
    """The spec of an mteb model: ``MoEESpec.create``'s, with the scoring mteb's evaluators can do."""
    spec = MoEESpec.create(model_name_or_path, **keys)
    if spec.paper_sum:
        raise ValueError("sum_scoring='paper' is the runner's own scoring (moee_exp.scoring.paper_scoring); mteb's "
                         "evaluators score a similarity sum: use sum_scoring='similarity' here")
    return spec


def moee_model_meta(model_name_or_path: str, **keys) -> ModelMeta:
    """The ModelMeta of MoEE on one checkpoint (a hub id, a local dir or a conf/model option such as ``tiny``)."""
    path, trust = resolve_model(str(model_name_or_path))
    if trust:
        keys.setdefault("trust_remote_code", True)
    return model_meta(moee_spec(path, **keys))


def get_moee_model(model_name_or_path: str, **keys) -> MoEEEncoder:
    """An mteb model (MoEEEncoder with ``moee_model_meta(model_name_or_path, **keys)`` as its metadata)."""
    return moee_model_meta(model_name_or_path, **keys).load_model()
