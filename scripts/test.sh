#!/usr/bin/env bash
# Set up (if needed) and run every test: notebook/package sync, README sync, notebook tests, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_MININTERVAL=5
echo "== sync: notebooks -> package =="
nbdev-clean && nbdev-export
if ! git diff --exit-code -- nbs wrpo || [ -n "$(git ls-files --others --exclude-standard wrpo nbs)" ]; then
  echo "ERROR: notebooks and package differ (or untracked files): run nbdev-clean && nbdev-export and commit" >&2
  git status --short nbs wrpo >&2; exit 1
fi
python tools/readme.py --check
echo "== notebook tests =="
OMP_NUM_THREADS=1 nbdev-test --n-workers 2 --skip-folder-re "^pipelines$"   # one thread per worker: oversubscribed torch threads slow 10-30x
echo "== pytest =="
python -m pytest -q -x "$@"
