#!/usr/bin/env bash
# The GPU check: on a CUDA machine, WRPO and DPO steps of random-initialised models of real shapes (Llama-3-8B widths cut
# to 4 layers, a Llama-3.2-1B shape) in bf16 with gradient checkpointing and precomputed reference log-probs, then ZeRO-3
# on one GPU through accelerate, and the attention layouts (dense mask, per-segment SDPA, compiled FlexAttention, from
# benchmarks/attention_layouts.py), and with 2 or more GPUs the builder's source stage in 1 and 2 worker processes
# (build.workers, one GPU each: time and equal samples); prints one JSON line (step times, useful tokens/s, peak memory). Nothing is downloaded:
# wheels the machine lacks (trl, datasets, deepspeed, ...) can be put in wheels/ (pip download them elsewhere) and are
# installed from there. `bash scripts/gpu_check.sh --smoke` runs a tiny shape on a CPU (a check of the script itself).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d wheels ] && ls wheels/*.whl >/dev/null 2>&1; then python -m pip install -q --no-index --find-links wheels wheels/*.whl; fi
python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" >&2
python scripts/gpu_check.py "$@"
