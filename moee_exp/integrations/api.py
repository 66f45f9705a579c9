"""The Python API for one's own texts: a loaded model + texts → pooled features (then ``fuse`` for embeddings)."""

from __future__ import annotations

import numpy as np

from ..features.extract import DEFAULT_FEATURES, extract, prompt_texts
from ..features.loading import LoadedModel
from ..features.prompts import TEMPLATES, check_template


def embed_texts(
    lm: LoadedModel,
    texts: list[str],
    prompt: str = "prompteol",
    *,
    template: str | None = None,
    normalize: bool = True,
    max_length: int = 512,
    batch_size: int = 32,
    padding_side: str = "left",
    features=DEFAULT_FEATURES,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Pooled features of ``texts`` in input order: {"hs": (n, hidden), "rw": (n, moe_layers, experts)}.

    ``prompt`` names one of the paper's templates (moee_exp.features.prompts.TEMPLATES); ``template`` gives your own.
    """
    if template is None:
        if prompt not in TEMPLATES:
            raise ValueError(f"unknown prompt {prompt!r}; use one of {', '.join(TEMPLATES)} or pass template=")
        template = TEMPLATES[prompt]
    prompted = prompt_texts(texts, check_template(template), lm.tokenizer, max_length, normalize)
    return extract(
        lm,
        prompted.texts,
        batch_size=batch_size,
        max_length=max_length,
        padding_side=padding_side,
        features=features,
        progress=progress,
    )
