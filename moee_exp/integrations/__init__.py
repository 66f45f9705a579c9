"""MoEE where users already are: a function (api.embed_texts), a CLI (embed: texts file → .npz), a
sentence-transformers module (st), an mteb model with real metadata (mteb_model) and a W&B report (dashboard).
Enters: a checkpoint and texts, or W&B runs. Leaves: embeddings, or a report. Each module here is its own public
import path (``moee_exp.integrations.st``, ``python -m moee_exp.integrations.embed``); ``moee_exp`` itself exports
``load_model`` and ``embed_texts`` from api.
"""
