"""MoEE as a sentence-transformers module: ``SentenceTransformer(modules=[MoEE(...)])`` encodes with our extraction
and fusion, so ``encode``, ``similarity``, ``save`` / load and any library that takes a SentenceTransformer work.

The module saves only its config (checkpoint id or dir, prompt, emb kind, alpha, pooling, ...), never the LLM's
weights: loading it loads the checkpoint again. Its class lives in this package, not in the sentence-transformers
namespace, so sentence-transformers 6 asks for ``trust_remote_code=True`` to load a saved dir; what that flag then
imports is ``moee_exp.integrations.st`` from your installed moee-exp (nothing is imported from the saved dir itself).

Similarity: a moee_sum model's ``similarity_fn_name`` is "dot", because the moee_sum vector [HS/|HS|, sqrt(a) RW/|RW|]
has dot product cos(HS) + a cos(RW) exactly: ``model.similarity`` is the paper's summed similarity. The other kinds
use cosine. Set ``similarity_fn_name`` on the SentenceTransformer to override.
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule

from ..features.loading import LoadedModel
from ..scoring.fuse import KINDS, fuse
from .api import embed_texts, load_model  # load_model: conf/model names (tiny, olmoe) too


class MoEE(InputModule):
    """Texts → MoEE embeddings of one MoE checkpoint × prompt × emb kind (see moee_exp.scoring.fuse for the kinds)."""

    # The checkpoint (moee_exp.features.loading.load_model's arguments), the prompt (moee_exp.features.prompts) and the emb config
    # (moee_exp.scoring.fuse.fuse's keywords): exactly what the runner's model / prompt / emb groups hold.
    config_file_name = "moee_config.json"  # not config.json: tools read that as a transformers config
    config_keys = [
        "model_name_or_path", "revision", "dtype", "quantization", "device", "trust_remote_code",
        "max_length", "padding_side",
        "prompt", "template", "normalize",
        "kind", "alpha", "rw_activation", "standardize", "hs_feature", "rw_feature",
    ]  # fmt: skip

    def __init__(
        self,
        model_name_or_path: str,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        quantization: str = "none",
        device: str = "auto",
        trust_remote_code: bool = False,
        max_length: int = 512,
        padding_side: str = "left",
        prompt: str = "prompteol",
        template: str | None = None,
        normalize: bool = True,
        kind: str = "moee_sum",
        alpha: float = 1.0,
        rw_activation: str = "logits",
        standardize: str = "none",
        hs_feature: str = "hs",
        rw_feature: str = "rw",
        lm: LoadedModel | None = None,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not one of {KINDS}")
        if standardize == "batch":  # sentence-transformers batches by length: a text's vector would depend on it
            raise ValueError("standardize='batch' makes an embedding depend on its batch-mates; use 'text' or 'none'")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.model_name_or_path, self.revision, self.dtype_name = str(model_name_or_path), revision, dtype
        self.quantization, self.device_name, self.trust_remote_code = quantization, device, trust_remote_code
        self.max_length, self.padding_side = int(max_length), padding_side
        self.prompt, self.template, self.normalize = prompt, template, bool(normalize)
        self.kind, self.alpha, self.rw_activation, self.standardize = kind, float(alpha), rw_activation, standardize
        self.hs_feature, self.rw_feature = hs_feature, rw_feature
        if lm is None:
            lm = load_model(
                self.model_name_or_path, revision=revision, dtype=dtype, quantization=quantization, device=device,
                trust_remote_code=trust_remote_code,
            )  # fmt: skip
        self.lm = lm
        self.auto_model = lm.model  # registered, so SentenceTransformer's .device / .to() see the LLM
        self.tokenizer = lm.tokenizer

    # names that clash with nn.Module / InputModule attributes are stored under other names
    def get_config_dict(self) -> dict[str, Any]:
        renamed = {"dtype": "dtype_name", "device": "device_name"}
        return {key: getattr(self, renamed.get(key, key)) for key in self.config_keys}

    @property
    def max_seq_length(self) -> int:
        return self.max_length

    def get_embedding_dimension(self) -> int:
        hs, rw = self.lm.hidden_size, len(self.lm.routers) * self.lm.n_experts
        return {"hs": hs, "rw": rw}.get(self.kind, hs + rw)

    def similarity_fn_name(self) -> str:
        """"dot" for moee_sum (its dot product is cos HS + alpha cos RW exactly), else "cosine"."""
        return "dot" if self.kind == "moee_sum" else "cosine"

    def on_model_ready(self, model) -> None:
        if getattr(model, "_similarity_fn_name", "set") is None:  # the user did not choose one
            model.similarity_fn_name = self.similarity_fn_name()

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """The texts themselves: the prompt template and tokenization are applied in ``forward`` (embed_texts).
        A sentence-transformers ``prompt`` (e.g. encode(..., prompt="query: ")) goes before the text, inside it."""
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in inputs]
        return {"text": [prompt + t for t in texts] if prompt else texts}

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        lm = self.lm
        lm.device = next(lm.model.parameters()).device  # follow SentenceTransformer.to(device)
        feats = embed_texts(
            lm, features["text"], self.prompt, template=self.template, normalize=self.normalize,
            max_length=self.max_length, batch_size=max(1, len(features["text"])), padding_side=self.padding_side,
            features=(self.hs_feature, self.rw_feature),
        )  # fmt: skip
        emb = fuse(
            feats, self.kind, alpha=self.alpha, rw_activation=self.rw_activation, standardize=self.standardize,
            hs_feature=self.hs_feature, rw_feature=self.rw_feature,
        )  # fmt: skip
        features["sentence_embedding"] = torch.from_numpy(emb).to(lm.device)
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)  # config only: the checkpoint is loaded again from model_name_or_path

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> MoEE:
        hub = {k: kwargs[k] for k in ("token", "cache_folder", "revision", "local_files_only") if k in kwargs}
        return cls(**cls.load_config(model_name_or_path, subfolder=subfolder, **hub))


def moee_sentence_transformer(model_name_or_path: str, **kwargs) -> SentenceTransformer:
    """A SentenceTransformer over ``MoEE(model_name_or_path, **kwargs)``, on the device ``kwargs["device"]`` names;
    ``model_name_or_path``: a conf/model option (``tiny``, ``olmoe``, ...), a hub id or a local dir."""
    module = MoEE(model_name_or_path, **kwargs)
    return SentenceTransformer(modules=[module], device=str(module.lm.device))
