#!/usr/bin/env bash
# Create .venv in the repo and install moee-exp into it. `bash scripts/setup.sh test` adds the test extras.
# TORCH_SPEC picks the torch build (default: the CPU wheel 2.13.0; a GPU user sets e.g. TORCH_SPEC=torch).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first: a bare `torch` requirement of another package would pull a multi-GB CUDA build on a CPU machine.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
# Our own code byte-compiled, as pip compiles the packages it installs (an editable install is not): each job process
# loads it instead of compiling it again (~0.1 s each), also where PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python -m compileall -q moee_exp analysis benchmarks scripts run.py tests > /dev/null
