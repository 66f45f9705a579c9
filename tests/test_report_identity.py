"""analysis.report keys its cells on each row's identity: two computations never share a cell, dry runs (generated
data) are marked and never compared with the paper, one column holds one metric (or says which cells differ), and
a table whose rows come from different library versions says so. Rows are written by hand (the layout a job
writes: config.yaml + results/<task>.json with the resume identity), so these tests run in well under a second."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import yaml

from analysis import collect as col
from analysis import figures, report, tables

MODEL = "olmoe-1b-7b"  # a model the paper reports, so that a paper number exists for each cell
VERSIONS = {"torch": "2.13.0", "transformers": "5.25.0", "tokenizers": "0.22.1", "bitsandbytes": None,
            "mteb": "2.26.24", "scikit-learn": "1.9.1", "numpy": "2.3.5", "scipy": "1.16.3", "datasets": "4.4.1",
            "sentence-transformers": "5.2.0"}
TASKS = {"STS12": ("STS", "cosine_spearman"), "SciDocsRR": ("Reranking", "map_at_1000")}


def _identity(emb="hs", instructions="e5", data="real", alpha=None, task="STS12", subsets=None, mteb=None):
    task_type, main = TASKS[task]
    ident = {
        "model": {"dtype": "torch.bfloat16", "quantization": "4bit", "device_type": "cuda", "torch": "2.13.0",
                  "transformers": "5.25.0", "tokenizers": "0.22.1", "model": "allenai/OLMoE-1B-7B-0924",
                  "commit": "abc"},
        "max_length": 512,
        "prompt": {"template": "{text}", "normalize": True},
        "protocol": {"name": "paper", "instructions": instructions, "instruction_table": {},
                     "instruction_format": "gritlm", "text": "paper", "sum_scoring": "paper"},
        "features": {"extraction_version": 3, "dtype": "float32"},
        "emb": {"kind": emb, "alpha": None, "rw_activation": "logits",
                "standardize": "none" if emb == "hs" else "batch", "standardize_batch_size": 128,
                "hs_feature": "hs", "rw_feature": "rw"},
        "weights": {"name": "grid", "alpha": alpha} if emb == "moee_sum" else None,
        "scorer": {"mteb": mteb or VERSIONS["mteb"], "moee_exp": "0.1.0", "code": "0123456789abcdef"},
        "versions": {**VERSIONS, **({"mteb": mteb} if mteb else {})},
        "task": {"name": task, "type": task_type, "main_score": main, "eval_splits": ["test"],
                 "dataset": {"path": f"mteb/{task}", "revision": "r1"}},
    }
    if subsets is not None:
        ident["task"]["hf_subsets"] = subsets
    if data == "synthetic":
        ident["task"]["synthetic"] = {"size": "small", "seed": 0, "version": 1}
    return ident


def _row(score, *, emb="hs", instructions="e5", data="real", alpha=None, task="STS12", subsets=None, mteb=None,
         at="2026-12-06T10:00:00+00:00", metric=None):
    task_type, main = TASKS[task]
    if metric:
        main = metric
    return {
        "model": MODEL, "model_name_or_path": "allenai/OLMoE-1B-7B-0924", "emb": emb,
        "weights": "grid" if emb == "moee_sum" else None, "alpha": alpha, "rw_activation": "logits",
        "standardize": "none" if emb == "hs" else "batch", "hs_feature": "hs", "rw_feature": "rw",
        "prompt": "none", "protocol": "paper", "instructions": instructions, "text_handling": "paper",
        "sum_scoring": "paper" if emb == "moee_sum" else None, "quantization": "4bit", "quantize_routers": True,
        "task_set": "paper", "task_data": data, "task": task, "task_type": task_type, "split": "test",
        "main_score_name": main, "main_score": score, "computed_at": at,
        "identity": _identity(emb, instructions, data, alpha, task, subsets, mteb),
    }


def _job(root: Path, name: str, rows: list[dict], data="real") -> Path:
    job = root / name
    (job / "results").mkdir(parents=True)
    emb = rows[0]["emb"]
    cfg = {"model": {"name": MODEL}, "emb": {"kind": emb}, "prompt": {"name": "none"},
           "tasks": {"name": "paper", "names": [r["task"] for r in rows], "data": data}}
    (job / "config.yaml").write_text(yaml.safe_dump(cfg))
    for r in rows:
        (job / "results" / f"{r['task']}.json").write_text(json.dumps(r))
    return job


def _main(tmp_path, *jobs, capsys=None) -> tuple[Path, str]:
    out = tmp_path / "report"
    assert report.main([*map(str, jobs), "--out", str(out)]) == 0
    return out, (capsys.readouterr().out if capsys else "")


def test_issue30_04_report_never_merges_two_computations(tmp_path):
    e5 = _job(tmp_path, "e5", [_row(0.70), _row(0.60, task="SciDocsRR")])
    none = _job(tmp_path, "none", [_row(0.50, instructions="none", at="2026-12-07T10:00:00+00:00"),
                                   _row(0.40, instructions="none", task="SciDocsRR", at="2026-12-07T10:00:00+00:00")])
    c = col.collect([tmp_path])
    assert c.n_duplicates == 0 and len(c.rows) == 4 and c.rows.cell_id.nunique() == 2
    long = tables.main_long(c.rows)
    sts = long[long.column == "STS"].set_index("label").ours
    # two cells, each labelled by the setting in which they differ
    assert sts.to_dict() == {"HS [paper protocol, instructions=e5]": 70.0,
                             "HS [paper protocol, instructions=none]": 50.0}
    # the same computation run again (a re-run elsewhere) is still one cell, the latest row kept
    again = _job(tmp_path / "again", "e5", [_row(0.71, at="2026-12-08T10:00:00+00:00")])
    c = col.collect([e5, none, again])
    assert c.n_duplicates == 1 and len(c.rows) == 4
    assert c.rows[c.rows.instructions == "e5"].set_index("task").main_score["STS12"] == 0.71


def test_issue30_04_other_subsets_of_a_dataset_are_another_cell(tmp_path):
    # tasks=mteb_eng_v2 (STS17 en-en only) and tasks=sts (every subset): the same config, another computation
    en = _job(tmp_path, "en", [_row(0.83, subsets=["en-en"])])
    every = _job(tmp_path, "all", [_row(0.77, subsets=["en-en", "en-de"], at="2026-12-07T10:00:00+00:00")])
    c = col.collect([en, every])
    assert c.n_duplicates == 0 and sorted(c.rows.main_score) == [0.77, 0.83]
    labels = set(tables.main_long(c.rows).label)
    assert len(labels) == 2 and all("hf_subsets" in lbl for lbl in labels), labels


def test_issue30_04_the_same_config_under_another_library_version_is_another_cell(tmp_path):
    """An upgrade's rows never replace the old ones in a cell: each version is its own cell, labelled by it."""
    old = _job(tmp_path, "old", [_row(0.70)])
    new = _job(tmp_path, "new", [_row(0.71, mteb="2.26.30", at="2026-12-07T10:00:00+00:00")])
    c = col.collect([old, new])
    assert c.n_duplicates == 0 and c.rows.cell_id.nunique() == 2
    long = tables.main_long(c.rows)
    sts = long[long.column == "STS"].set_index("label").ours
    assert sorted(sts.items()) == [("HS [paper protocol, versions.mteb=2.26.24]", 70.0),  # one label per version
                                   ("HS [paper protocol, versions.mteb=2.26.30]", 71.0)]


def test_issue30_04_rows_without_identity_fall_back_to_their_fields(tmp_path):
    old = [{k: v for k, v in r.items() if k != "identity"} for r in (_row(0.7), _row(0.5, instructions="none"))]
    c = col.collect([_job(tmp_path, "a", [old[0]]), _job(tmp_path, "b", [old[1]])])
    assert c.n_duplicates == 0 and len(c.rows) == 2 and c.rows.cell_id.nunique() == 2


def test_issue29_03_synthetic_rows_are_marked_and_never_compared_with_the_paper(tmp_path, monkeypatch):
    real = _job(tmp_path, "real", [_row(0.70), _row(0.60, task="SciDocsRR")])
    dry = _job(tmp_path, "dry", [_row(0.99, data="synthetic", at="2026-12-07T10:00:00+00:00"),
                                 _row(0.98, data="synthetic", task="SciDocsRR", at="2026-12-07T10:00:00+00:00")],
               data="synthetic")
    c = col.collect([real, dry])
    assert c.n_duplicates == 0 and len(c.rows) == 4  # never merged with the real rows
    long = tables.main_long(c.rows)
    syn, ours = long[long.task_data == "synthetic"], long[long.task_data == "real"]
    assert set(syn.label) == {"HS [paper protocol, synthetic]"} and set(ours.label) == {"HS [paper protocol]"}
    assert syn.paper.isna().all() and syn["diff"].isna().all()  # no Δ from generated data
    assert ours.paper.notna().all()  # the real rows keep theirs
    out, _ = _main(tmp_path, real, dry)
    rows = pd.read_csv(out / "rows.csv")
    assert sorted(rows.task_data) == ["real", "real", "synthetic", "synthetic"]
    md, tex = (out / "main_table.md").read_text(), (out / "main_table.tex").read_text()
    assert "HS [paper protocol, synthetic] | ours |" in md and "synthetic" in tex
    assert "never compared with the paper" in md
    assert md.count("| Δ |") == 1  # only the real cell has a Δ row
    # the α figure's title names its data source
    titles = []
    monkeypatch.setattr(figures, "plot_alpha", lambda table, model, label, prompt, tasks, path, auto=None:
                        titles.append(tasks) or path)
    sums = [_job(tmp_path / "sum", f"a{a}", [_row(0.5 + a / 10, emb="moee_sum", alpha=a, data="synthetic")],
                 data="synthetic") for a in (0.2, 0.6)]
    report.build(col.collect(sums), tmp_path / "r2")
    assert titles and all("synthetic data" in t for t in titles), titles


def test_issue29_07_one_metric_per_column_or_a_footnote(tmp_path):
    hs = _job(tmp_path, "hs", [_row(0.70), _row(0.60, task="SciDocsRR")])  # mteb 2's map_at_1000
    sums = _job(tmp_path, "sum", [_row(0.75, emb="moee_sum", alpha=1.0),
                                  _row(0.65, emb="moee_sum", alpha=1.0, task="SciDocsRR", metric="map")])
    out, _ = _main(tmp_path, hs, sums)
    md = (out / "main_table.md").read_text()
    long = pd.read_csv(out / "main_table.csv")
    rerank = long[long.column == "Reranking"].set_index("method").metric
    assert rerank["HS"] == "map_at_1000" and rerank["MoEE_sum"] == "map"
    assert "‡ Reranking: `map_at_1000`, but `map` for MoEE_sum" in md
    sum_row = next(line for line in md.splitlines() if line.startswith("| olmoe-1b-7b | MoEE_sum") and "| ours |"
                   in line)
    assert "‡" in sum_row
    # the protocol tag cannot be read as the paper's own row
    assert "[paper]" not in md and "| in the paper |" in md and "HS [paper protocol] | ours |" in md


def test_issue28_03_report_names_mixed_library_versions(tmp_path, capsys):
    old = _job(tmp_path, "old", [_row(0.70), _row(0.60, task="SciDocsRR")])
    new = _job(tmp_path, "new", [_row(0.71, emb="rw", mteb="2.26.30"), _row(0.61, emb="rw", task="SciDocsRR",
                                                                         mteb="2.26.30")])
    out, printed = _main(tmp_path, old, new, capsys=capsys)
    line = "note: rows from mteb 2.26.24 and 2.26.30 are in this table"
    assert printed.count(f"main table: {line}") == 1
    assert line in (out / "main_table.md").read_text() and line in (out / "README.md").read_text()
    rows = pd.read_csv(out / "rows.csv")
    assert sorted(rows["versions.mteb"]) == ["2.26.24", "2.26.24", "2.26.30", "2.26.30"]
    assert set(rows["versions.scikit-learn"]) == {"1.9.1"}
    # one version throughout: no note
    _, printed = _main(tmp_path / "one", old, capsys=capsys)
    assert "note:" not in printed


def test_issue29_03_dashboard_leaves_dry_runs_out_unless_asked():
    from moee_exp.integrations.dashboard import build_report, report_spec

    def filters(spec):
        found = []

        def walk(x):
            if isinstance(x, dict):
                if isinstance(x.get("filters"), dict):
                    found.append(x["filters"]["filters"])
                for v in x.values():
                    walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)

        walk(spec)
        return found

    dry = {"key": {"section": "config", "name": "tasks.data"}, "op": "!=", "value": "synthetic"}
    runsets = filters(report_spec(build_report("someone", "moee", [("olmoe", "none")], bind=False)))
    assert runsets and all(any({k: f.get(k) for k in dry} == dry for f in fs) for fs in runsets)
    runsets = filters(report_spec(build_report("someone", "moee", [("olmoe", "none")], bind=False, synthetic=True)))
    assert runsets and not any(f["key"]["name"] == "tasks.data" for fs in runsets for f in fs)


def test_report_identity_ignores_where_and_when(tmp_path):
    # another device, library versions or code hash: the same computation (a re-run), one cell
    a = _row(0.70)
    b = copy.deepcopy(a)
    b["identity"]["model"]["device_type"] = "cpu"
    b["identity"]["scorer"]["code"] = "fedcba9876543210"
    b["computed_at"] = "2026-12-09T10:00:00+00:00"
    c = col.collect([_job(tmp_path, "a", [a]), _job(tmp_path, "b", [b])])
    assert c.n_duplicates == 1 and len(c.rows) == 1
