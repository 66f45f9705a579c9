"""MoEE: a Mixture-of-Experts LLM's routing weights and last hidden state as text embeddings."""

from .features.loading import load_model
from .features.routers import find_routers
from .integrations.api import embed_texts
from .scoring.fuse import fuse

__all__ = ["embed_texts", "find_routers", "fuse", "load_model"]
