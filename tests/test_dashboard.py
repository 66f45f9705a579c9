"""The W&B dashboard (moee_exp.integrations.dashboard): every panel reads a key the runner's W&B runs really log; offline."""

import json
import re

import pytest
from jobs import cli, job_dirs, wandb_records, wandb_summary

pytest.importorskip("wandb_workspaces")


def _references(spec: dict) -> dict[str, set]:
    """Every key the saved report would read, by where W&B looks it up, found in the viewspec W&B stores."""
    text = json.dumps(spec)
    refs = {"config": set(), "summary": set(), "run": set()}
    # panel axes and bar chart grouping: W&B stores a flat config key "a.b" as {"a.b": {"value": ...}}, so the path
    # must be "a.b.value"; anything else (e.g. the nested form "a.value.b") is kept as is and will not match
    for path in re.findall(r'"config:([^"]+)"', text) + re.findall(r'"groupBy": "([^"]+)"', text):
        refs["config"].add(path.removesuffix(".value") if path.endswith(".value") else path)
    refs["summary"] |= set(re.findall(r'"summary:([^"]+)"', text)) | set(re.findall(r'"summary_metrics\.([^"]+)"', text))
    for section, name in re.findall(r'\{"section": "(\w+)", "name": "([^"]+)"\}', text):  # filters, run set grouping
        if name != "createdAt":  # the run sets' default sort order
            refs[section].add(name)
    refs["summary"] |= set(re.findall(r'"key": \{"nodeType": "const", "type": "string", "val": "([^"]+)"\}', text))
    return refs


def _panels(x):
    if isinstance(x, dict):
        if "viewType" in x:
            yield x
            return
        x = list(x.values())
    if isinstance(x, list):
        for item in x:
            yield from _panels(item)


def test_every_panel_reads_a_key_our_runs_log(tmp_cwd):
    from moee_exp.integrations.dashboard import (
        build_report,
        combos_from_dirs,
        report_spec,
        types_from_dirs,
    )

    proc = cli("progress=false", "logger.project=moee-dash", cwd=tmp_cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = job_dirs(tmp_cwd / "outputs")
    logged = wandb_summary(job)
    (run,) = [r["run"] for r in wandb_records(job) if r.get("type") == "run"]

    combos = combos_from_dirs([tmp_cwd / "outputs"])
    assert combos == [("tiny-olmoe", "prompteol")]
    types = types_from_dirs([tmp_cwd / "outputs"])
    assert types == ["Classification", "Clustering", "PairClassification", "Reranking", "STS", "Summarization"]
    spec = report_spec(build_report("someone", "moee-dash", combos, task_types=types, bind=False))
    refs = _references(spec)
    assert {"weights.alpha", "emb.kind", "model.name", "prompt.name"} <= refs["config"]
    assert {"avg", "scores", "type/STS", "type/Clustering"} <= refs["summary"]
    assert refs["run"] == {"group"}
    assert refs["config"] <= set(logged["config"]), refs["config"] - set(logged["config"])
    assert refs["summary"] <= set(logged["summary"]), refs["summary"] - set(logged["summary"])
    assert run["run_group"]  # "group": runs of a sweep share one
    # the filters select this run: its config values are the ones the report filters on
    assert logged["config"]["model.name"] == "tiny-olmoe" and logged["config"]["emb.kind"] == "moee_sum"
    # every panel, on its own, reads keys our run logged (and no other)
    panels = list(_panels(spec))
    assert [p["viewType"] for p in panels] == ["Scatter Plot"] * 7 + ["Bar Chart"] * 7 + ["Weave"]
    for panel in panels:
        own = _references({"config": panel["config"]})
        assert own["config"] | own["summary"], panel["config"]
        assert own["config"] <= set(logged["config"]) and own["summary"] <= set(logged["summary"])


def test_saving_without_network_or_key_is_one_error_line(tmp_path, monkeypatch, capfd):
    """`python -m moee_exp.integrations.dashboard someone/moee --combo ...`: its main, in-process."""
    from moee_exp.integrations.dashboard import main

    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # no key anywhere
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    assert main(["someone/moee", "--combo", "tiny-olmoe:prompteol"]) == 1
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: saving the report"), err[-2000:]
    assert "Traceback" not in err


def test_from_a_missing_or_empty_dir_is_one_error_line(tmp_path, capsys):
    """A mistyped --from would silently give a report without sections: it is one error line instead."""
    from moee_exp.integrations import dashboard

    assert dashboard.main(["my-team/moee", "--from", str(tmp_path / "nope"), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --from {tmp_path / 'nope'}: no such dir (give job or sweep dirs of run.py)"]
    assert dashboard.main(["my-team/moee", "--from", str(tmp_path), "--dry-run"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --from {tmp_path}: no job dir with results there")
