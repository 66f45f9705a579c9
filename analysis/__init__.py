"""Tables and figures of the paper from our sweeps: ``python -m analysis.report <multirun dirs> --out report/``.

collect (result rows) → tables (main / per-dataset / Table 5) · figures (α curves, prompt heatmaps) ·
prompt_robustness · complementarity → report (the one command). The paper's numbers are in analysis/data/.
"""
