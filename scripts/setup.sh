#!/usr/bin/env bash
# Create .venv (once) and install wrpo with its pinned stack. CPU machines take the local torch 2.13.0 CPU wheel first.
# A rerun with an unchanged pyproject.toml (and wrpo importable from this checkout) installs nothing and prints nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
stamp=.venv/.wrpo-setup
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $PWD"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && \
   python -c "import sys, wrpo, wrpo.zoo; sys.exit(wrpo.__file__ != '$PWD/wrpo/__init__.py')" 2>/dev/null; then
  exit 0
fi
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev,deepspeed]"   # DeepSpeed: the ZeRO-3 tests run it on 2 CPU processes
python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$want" > "$stamp"
