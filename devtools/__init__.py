"""Development tools beside scripts/: what builds the generated tables and the test fixtures' comparisons, not part
of the installed package (pyproject packages ``moee_exp*`` only).

coverage (the MoE coverage table of docs/coverage.md: a tiny model per transformers family, our HS/RW checked against
the model's own outputs), sizing (RW dims and weight memory of a checkpoint from its config, on the meta device:
scripts/model_sizes.py), public_fixture (our ``protocol=paper`` against the public code's stored outputs:
tests/test_paper_protocol.py, BENCHMARKS.md). Imported from the repo root: pytest's ``pythonpath = ["."]``, the
scripts' own ``sys.path`` entry, ``python -m devtools.<module>``.
"""
