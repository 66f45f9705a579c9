"""MoEE: a Mixture-of-Experts LLM's routing weights and last hidden state as text embeddings.

The names below are imported on first use (PEP 562), so ``import moee_exp.errors`` (run.py's first import, which
reports config mistakes in seconds) does not pay for torch and transformers.
"""

from importlib import import_module

_EXPORTS = {
    "embed_texts": "moee_exp.integrations.api",
    "find_routers": "moee_exp.features.routers",
    "fuse": "moee_exp.scoring.fuse",
    "load_model": "moee_exp.integrations.api",  # takes conf/model names (tiny, olmoe) too
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'moee_exp' has no attribute {name!r}")
