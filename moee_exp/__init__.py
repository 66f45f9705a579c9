"""MoEE: a Mixture-of-Experts LLM's routing weights and last hidden state as text embeddings."""

from .api import embed_texts
from .fuse import fuse
from .loading import load_model
from .routers import find_routers

__all__ = ["embed_texts", "find_routers", "fuse", "load_model"]
