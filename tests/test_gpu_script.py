"""The prepared GPU script (benchmarks/gpu_extraction.py) runs end to end on CPU with --smoke (issue 20)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gpu_extraction import main  # noqa: E402


def test_smoke_run_measures_every_implementation_and_writes_the_table(tmp_path):
    md = tmp_path / "gpu.md"  # the page holding the block (docs/benchmarks/gpu.md)
    md.write_text("# B\n\n<!-- bench:gpu-experts -->\nold\n<!-- /bench:gpu-experts -->\n\nafter\n")
    res = main(["--smoke", "--models", "OLMoE-1B-7B", "--update", str(md)])
    measured = {(r["impl"], r["batch"]) for r in res["rows"] if "ours" in r}
    assert {("grouped_mm", "4 x 16"), ("eager", "4 x 16"), ("batched_mm", "1 x 8")} <= measured
    assert all(r["ours"]["tokens_per_s"] > 0 and r["bare"]["tokens_per_s"] > 0 for r in res["rows"] if "ours" in r)
    text = md.read_text()
    assert "old" not in text and text.endswith("after\n")
    assert "| OLMoE-1B-7B | fp32 (smoke) | `batched_mm` | 1 x 8 |" in text
    assert "4-bit | `all` |  | not measured: needs CUDA" in text
