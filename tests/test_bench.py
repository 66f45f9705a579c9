"""benchmarks/bench.py dispatches each section to its module (issue 21): the mapping points at real functions, a
section's table lands in its block of the page --update names (docs/benchmarks/), and an unknown section name is an
error. Nothing is timed."""

import importlib
import json
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import bench  # noqa: E402


def test_every_section_maps_to_a_module_function():
    for own in bench.OWN.values():
        assert callable(getattr(importlib.import_module(f"benchmarks.{own.module}"), own.report))
    for module in bench.TABLE.values():
        assert callable(importlib.import_module(f"benchmarks.{module}").rows)


def test_a_section_publishes_its_block(tmp_path, monkeypatch):
    fake = types.ModuleType("benchmarks.jobcost")
    fake.measure = lambda repeats, tmp: {"repeats": repeats}
    fake.report = lambda res: f"| fixed | {res['repeats']} |"
    monkeypatch.setitem(sys.modules, "benchmarks.jobcost", fake)
    md, js = tmp_path / "B.md", tmp_path / "b.json"
    md.write_text("# B\n\n<!-- bench:fixed -->\nold\n<!-- /bench:fixed -->\n\nafter\n")
    monkeypatch.setattr(sys, "argv", ["bench.py", "--sections", "fixed", "--repeats", "2", "--update", str(md),
                                      "--json", str(js)])
    bench.main()
    text = md.read_text()
    assert "old" not in text and text.endswith("<!-- /bench:fixed -->\n\nafter\n")
    assert "| fixed | 2 |" in text and "Command: `python benchmarks/bench.py --sections fixed --repeats 2`" in text
    assert json.loads(js.read_text())["fixed"] == {"repeats": 2}


def test_unknown_section_is_an_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench.py", "--sections", "padding,nope"])
    with pytest.raises(SystemExit) as e:
        bench.main()
    assert e.value.code == 2 and "error: unknown section(s) nope" in capsys.readouterr().err


def test_a_page_without_the_block_gets_it_appended_and_keeps_its_others(tmp_path, monkeypatch):
    """--update names a page (docs/benchmarks/<page>.md): a block it lacks is appended; its other blocks stay."""
    fake = types.ModuleType("benchmarks.jobcost")
    fake.measure = lambda repeats, tmp: {"repeats": repeats}
    fake.report = lambda res: "| fixed | new |"
    monkeypatch.setitem(sys.modules, "benchmarks.jobcost", fake)
    page = tmp_path / "page.md"
    page.write_text("# P\n\n<!-- bench:cut -->\nkept\n<!-- /bench:cut -->\n\ntext\n")
    monkeypatch.setattr(sys, "argv", ["bench.py", "--sections", "fixed", "--update", str(page)])
    bench.main()
    text = page.read_text()
    assert "<!-- bench:cut -->\nkept\n<!-- /bench:cut -->\n\ntext\n\n<!-- bench:fixed -->" in text
    assert text.endswith("| fixed | new |\n<!-- /bench:fixed -->\n")
