"""The mteb encoder: a thin AbsEncoder over a featurizer and one emb kind."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

from .fuse import fuse, sink_for


class MoEEEncoder(AbsEncoder):
    """Encodes every text mteb hands it with ``featurizer`` and fuses the features into emb kind ``kind``.

    Similarity is cosine: for moee_sum that is (cos HS + alpha cos RW) / (1 + alpha), the paper's summed
    similarity up to a constant factor (see moee_exp.fuse).
    """

    def __init__(
        self,
        featurizer: Callable[..., dict[str, np.ndarray]],
        kind: str,
        *,
        name: str = "moee/model",
        revision: str | None = None,
        **fuse_kwargs,
    ):
        self.model = featurizer
        self.kind = kind
        self.fuse_kwargs = fuse_kwargs  # alpha, rw_activation, standardize, ...: see moee_exp.fuse.fuse
        self.mteb_model_meta = ModelMeta.create_empty(
            {
                "name": name if "/" in name else f"moee/{name}",
                "revision": revision or "local",
                "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["PyTorch"],
                "use_instructions": False,
            }
        )

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        desc = f"{task_metadata.name}/{hf_split}"
        sink = sink_for(self.kind, **self.fuse_kwargs) if getattr(self.model, "takes_sink", False) and texts else None
        if sink is not None:  # fusion done while the cache is read (moee_exp.fuse.SumSink): same values as fuse()
            self.model(texts, desc=desc, sink=sink)
            return sink.emb
        return fuse(self.model(texts, desc=desc), self.kind, **self.fuse_kwargs)
