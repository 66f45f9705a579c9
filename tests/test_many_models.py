"""The report's main table takes any number of models (e.g. +experiment=new_models: 7) and the Retrieval type."""

import numpy as np
import pandas as pd

from analysis import tables

METHODS = {"hs": "HS", "rw": "RW", "moee_concat": "MoEE_concat", "moee_sum": "MoEE_sum"}
TASKS = {"STS12": "STS", "ArguAna": "Retrieval", "SciFact": "Retrieval", "Banking77Classification": "Classification"}


def rows(models):
    rng = np.random.default_rng(0)
    out = [dict(model=m, method=meth, emb=emb, alpha=1.0 if emb == "moee_sum" else None, prompt=p, task=t,
                task_type=tt, score=float(rng.uniform(10, 90)), hs_feature="hs", rw_feature="rw",
                rw_activation="logits", standardize="text" if emb == "moee_concat" else "none", computed_at=0.0,
                weights="fixed")
           for m in models for emb, meth in METHODS.items() for p in ("none", "prompteol") for t, tt in TASKS.items()]
    return pd.DataFrame(out)


def test_main_table_has_every_model_and_retrieval():
    models = [f"model-{i}" for i in range(9)]
    df = rows(models)
    long = tables.main_long(df)
    assert set(long.model) == set(models)
    assert "Retrieval" in set(long.column)
    retr = long[(long.model == "model-3") & (long.method == "RW") & (long.prompt == "none") & (long.column == "Retrieval")]
    want = df[(df.model == "model-3") & (df.emb == "rw") & (df.prompt == "none") & (df.task_type == "Retrieval")]
    assert retr.ours.item() == want.score.mean()
    wide = tables.main_wide(long)
    assert set(wide[("", "model")]) == set(models)
    names = [" ".join(map(str, c)) for c in wide.columns]
    first = lambda word: next(i for i, n in enumerate(names) if word in n)  # noqa: E731
    assert first("Class") < first("Retr") < first("STS")  # a known task type, in mteb's order
