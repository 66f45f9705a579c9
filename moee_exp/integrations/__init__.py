"""MoEE where users already are: a function (api.embed_texts), a CLI (embed: texts file → .npz), a
sentence-transformers module (st), an mteb model with real metadata (mteb_model) and a W&B report (dashboard).
Enters: a checkpoint and texts, or W&B runs. Leaves: embeddings, or a report. ``moee_exp.embed``, ``moee_exp.st``,
``moee_exp.mteb_model``, ``moee_exp.dashboard`` and ``moee_exp.api`` remain the public import paths.
"""
