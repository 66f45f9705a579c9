"""The job layer: one Hydra job, from its config to result files.

config (the schemas of conf/ and ``read_job``: the one place the DictConfig becomes a typed, validated Job) →
preflight (a sweep's shared overrides checked before any job is launched) → runner (features → scores for every
task; preemption keeps finished rows) → resume (which rows of an earlier run of the same config can be reused) →
record (rows to results/ and results.csv first, then W&B). Enters: a composed Hydra config. Leaves: result rows on
disk and in W&B, a printed table.
"""
