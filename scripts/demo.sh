#!/usr/bin/env bash
# Set up (if needed) and run the main job: the offline miniature fusion world end to end (`wrpo demo`).
# Everything lands in runs/demo (results.md, results.json, figures/, executed notebooks); extra args go to `wrpo demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
command -v nvidia-smi >/dev/null 2>&1 || export DS_ACCELERATOR=cpu   # no GPU: DeepSpeed's CPU accelerator, without its "unable to detect" warning
wrpo demo --size demo --out runs/demo "$@"
