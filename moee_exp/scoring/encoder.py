"""The mteb encoder: a thin AbsEncoder over a featurizer and one emb kind."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

from ..features.instructions import Instructions
from .fuse import blocks, fuse, sink_for


class MoEEEncoder(AbsEncoder):
    """Encodes every text mteb hands it with ``featurizer`` and fuses the features into emb kind ``kind``.

    Similarity is cosine: for moee_sum that is (cos HS + alpha cos RW) / (1 + alpha), the paper's summed
    similarity up to a constant factor (see moee_exp.scoring.fuse).
    """

    def __init__(
        self,
        featurizer: Callable[..., dict[str, np.ndarray]],
        kind: str,
        *,
        name: str = "moee/model",
        revision: str | None = None,
        instructions: Instructions | None = None,
        meta: ModelMeta | None = None,
        **fuse_kwargs,
    ):
        self.model = featurizer
        self.kind = kind
        self.fuse_kwargs = fuse_kwargs  # alpha, rw_activation, standardize, ...: see moee_exp.scoring.fuse.fuse
        # the task's instruction before each text (moee_exp.features.instructions); None: no instructions
        self.instructions = instructions if instructions is not None and instructions.mode != "none" else None
        # the model's real metadata (moee_exp.scoring.model_meta) where the caller has it, else a minimal one
        self.mteb_model_meta = meta or ModelMeta.create_empty(
            {
                "name": name if "/" in name else f"moee/{name}",
                "revision": revision or "local",
                "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["PyTorch"],
                "use_instructions": self.instructions is not None,
            }
        )

    def features(self, texts: list[str], task_metadata=None, prompt_type=None, desc: str | None = None,
                 **kwargs) -> dict:
        """Pooled features of ``texts``, each prompted with the task's instruction (if instructions are on)."""
        instruction = self.instructions(task_metadata, prompt_type) if self.instructions else ""
        if instruction:  # the instruction is part of what is extracted (and of the feature cache's key)
            kwargs["instruction"] = instruction
        return self.model(texts, desc=desc, **kwargs)

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        desc = f"{task_metadata.name}/{hf_split}"
        sink = sink_for(self.kind, **self.fuse_kwargs) if getattr(self.model, "takes_sink", False) and texts else None
        if sink is not None:  # fusion done while the cache is read (moee_exp.scoring.fuse.SumSink): same values as fuse()
            self.features(texts, task_metadata, prompt_type, desc=desc, sink=sink)
            return sink.emb
        return fuse(self.features(texts, task_metadata, prompt_type, desc=desc), self.kind, **self.fuse_kwargs)

    def encode_blocks(self, texts: list[str], *, task_metadata=None, prompt_type=None) -> tuple[np.ndarray, ...]:
        """(HS, RW) of one encode call, each standardized as the emb config says (protocol=paper: per feature over
        each batch of 128 of this list): the two embeddings the public code's MoEE(sum) scores
        (moee_exp.scoring.paper_scoring's ``encode`` callback)."""
        features = self.features(list(texts), task_metadata, prompt_type, desc=getattr(task_metadata, "name", None))
        hs, rw = blocks(features, **self.fuse_kwargs)
        return hs.astype(np.float32), rw.astype(np.float32)
