"""The scoring path: pooled features in, scores out.

fuse (HS / RW / MoEE(concat) / MoEE(sum) from the two blocks, standardized as the protocol says) → weights (MoEE(sum)'s
similarity weight α: fixed, a grid, or chosen per task) → encoder (an mteb encoder over a Featurizer) → tasks (task
names → mteb tasks: the registry, the bundled demo tasks, synthetic data of their schemas) → evaluate (mteb.evaluate
per task, one result row each; fast_columns speeds mteb's scoring; paper_scoring is the public code's MoEE(sum)
scoring). Enters: a Featurizer and task names. Leaves: one row per task (main score and every field mteb reports).
"""
