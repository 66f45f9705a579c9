"""The paper's four embeddings (Section 3): HS, RW and their two combinations, MoEE(concat) and MoEE(sum)."""

from . import EmbKind, register

# HS: the last hidden state (at the last real token, or another pooling: emb.hs_feature); public code: not standardized
register(EmbKind("hs", "HS", blocks=("hs",), paper_standardize="none"))
# RW: every MoE layer's router logits, concatenated in layer order
register(EmbKind("rw", "RW", blocks=("rw",)))
# MoEE(concat): HS and RW side by side, each standardized (text: per vector, so an embedding depends on its text alone)
register(EmbKind("moee_concat", "MoEE_concat", blocks=("hs", "rw"), standardize="text"))
# MoEE(sum): [HS/|HS|, sqrt(alpha) RW/|RW|], whose dot product is exactly cos(HS) + alpha cos(RW)
register(EmbKind("moee_sum", "MoEE_sum", blocks=("hs", "rw"), unit_blocks=True, weighted=True, similarity="dot"))
