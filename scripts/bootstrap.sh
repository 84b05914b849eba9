#!/usr/bin/env bash
# Create .venv (if missing) and install unet_monai into it, editable, with the given extras.
#   bash scripts/bootstrap.sh            # runtime only
#   bash scripts/bootstrap.sh test       # runtime + test tools
# torch: if .venv already has one (say a CUDA build you installed), it is kept. Otherwise TORCH_SPEC is
# installed first, "torch==2.13.0" by default: never let pip resolve a bare "torch" on a CPU-only machine,
# which pulls several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip_install "${TORCH_SPEC:-torch==2.13.0}"
fi
if [ -n "$extras" ]; then
  pip_install -e ".[$extras]"
else
  pip_install -e .
fi
.venv/bin/python -c "import torch, monai, unet_monai; print(f'unet_monai {unet_monai.__version__}, monai {monai.__version__}, torch {torch.__version__}')"
