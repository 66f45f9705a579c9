"""MoEE as a sentence-transformers module: ``SentenceTransformer(modules=[MoEE(...)])`` encodes with our extraction
and fusion, so ``encode``, ``similarity``, ``save`` / load and any library that takes a SentenceTransformer work.

The module saves only its spec (moee_exp.scoring.spec: checkpoint id or dir, prompt, emb kind, alpha, ...), never
the LLM's weights: loading it loads the checkpoint again. Its class lives in this package, not in the sentence-transformers
namespace, so sentence-transformers 6 asks for ``trust_remote_code=True`` to load a saved dir; what that flag then
imports is ``moee_exp.integrations.st`` from your installed moee-exp (nothing is imported from the saved dir itself).

Similarity: the emb kind's (moee_exp.scoring.kinds). A moee_sum model's ``similarity_fn_name`` is "dot", because the
moee_sum vector [HS/|HS|, sqrt(a) RW/|RW|] has dot product cos(HS) + a cos(RW) exactly: ``model.similarity`` is the
paper's summed similarity. The other kinds use cosine. Set ``similarity_fn_name`` on the SentenceTransformer to override.
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule

from ..features.loading import LoadedModel
from ..scoring.fuse import fuse
from ..scoring.spec import MoEESpec
from .api import embed_texts, load_model  # load_model: conf/model names (tiny, olmoe) too


class MoEE(InputModule):
    """Texts → MoEE embeddings of one spec (moee_exp.scoring.spec: checkpoint × prompt × emb kind × α).

    ``MoEE("olmoe", kind="moee_sum", alpha=0.5)`` takes a spec's flat keywords (``MoEESpec.create``: the model,
    prompt and emb groups' fields); ``MoEE(spec=...)`` a spec or its ``to_dict()``, which is what ``save`` writes."""

    config_file_name = "moee_config.json"  # not config.json: tools read that as a transformers config
    config_keys = ["spec"]

    def __init__(self, model_name_or_path: str | None = None, *, spec: MoEESpec | dict | None = None,
                 lm: LoadedModel | None = None, **keys):
        super().__init__()
        if spec is None:
            if model_name_or_path is None:
                raise TypeError("MoEE needs a model (a hub id, a local dir or a conf/model option) or spec=")
            spec = MoEESpec.create(model_name_or_path, **keys)
        elif model_name_or_path is not None or keys:
            raise TypeError("give MoEE either spec= or a model with keywords, not both")
        spec = spec if isinstance(spec, MoEESpec) else MoEESpec.from_dict(spec)
        if spec.emb.standardize == "batch":  # sentence-transformers batches by length: a text's vector would depend on it
            raise ValueError("standardize='batch' makes an embedding depend on its batch-mates; use 'text' or 'none'")
        if isinstance(spec.alpha, str):
            raise ValueError(f"alpha={spec.alpha!r} is chosen per task by the runner; give a number here")
        if spec.protocol.instructions != "none" or spec.protocol.text != "clean":
            raise ValueError("a sentence-transformers model encodes plain texts: protocol instructions and the paper's "
                             "text handling are the runner's (use the default protocol here)")
        self.spec = spec
        if lm is None:
            m = spec.model
            lm = load_model(m.name_or_path, revision=m.revision, dtype=m.dtype, quantization=m.quantization,
                            device=m.device, trust_remote_code=m.trust_remote_code)
        self.lm = lm
        self.auto_model = lm.model  # registered, so SentenceTransformer's .device / .to() see the LLM
        self.tokenizer = lm.tokenizer

    def get_config_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict()}

    @property
    def max_seq_length(self) -> int:
        return self.spec.model.max_length

    def get_embedding_dimension(self) -> int:
        return self.spec.kind.dim(self.lm.hidden_size, len(self.lm.routers) * self.lm.n_experts)

    def similarity_fn_name(self) -> str:
        """The kind's (moee_exp.scoring.kinds): "dot" for moee_sum, whose dot product is cos HS + alpha cos RW."""
        return self.spec.kind.similarity

    def on_model_ready(self, model) -> None:
        if getattr(model, "_similarity_fn_name", "set") is None:  # the user did not choose one
            model.similarity_fn_name = self.similarity_fn_name()

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """The texts themselves: the prompt template and tokenization are applied in ``forward`` (embed_texts).
        A sentence-transformers ``prompt`` (e.g. encode(..., prompt="query: ")) goes before the text, inside it."""
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in inputs]
        return {"text": [prompt + t for t in texts] if prompt else texts}

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        lm, spec = self.lm, self.spec
        lm.device = next(lm.model.parameters()).device  # follow SentenceTransformer.to(device)
        feats = embed_texts(
            lm, features["text"], spec.prompt.name, template=spec.template, normalize=spec.prompt.normalize,
            max_length=spec.model.max_length, batch_size=max(1, len(features["text"])),
            padding_side=spec.model.padding_side, features=(spec.emb.hs_feature, spec.emb.rw_feature),
        )  # fmt: skip
        emb = fuse(feats, spec.emb.kind, **spec.emb.fuse_kwargs(float(spec.alpha)))
        features["sentence_embedding"] = torch.from_numpy(emb).to(lm.device)
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)  # config only: the checkpoint is loaded again from the spec's model

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> MoEE:
        hub = {k: kwargs[k] for k in ("token", "cache_folder", "revision", "local_files_only") if k in kwargs}
        return cls(**cls.load_config(model_name_or_path, subfolder=subfolder, **hub))


def moee_sentence_transformer(model_name_or_path: str, **keys) -> SentenceTransformer:
    """A SentenceTransformer over ``MoEE(model_name_or_path, **keys)``, on the device its spec names;
    ``model_name_or_path``: a conf/model option (``tiny``, ``olmoe``, ...), a hub id or a local dir."""
    module = MoEE(model_name_or_path, **keys)
    return SentenceTransformer(modules=[module], device=str(module.lm.device))
