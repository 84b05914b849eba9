#!/usr/bin/env bash
# Everything that needs a GPU, in one short run (under 8 minutes on one GPU): the gpu-marked tests (AMP train steps,
# inference on the device, the bundle on cuda:0 and under torchrun with nccl), then the CUDA benchmark (PaperUNet
# against MONAI's BasicUNet and sliding window, ratios printed). Run from the repository root on a machine with a
# CUDA build of torch in .venv (bash scripts/bootstrap.sh test keeps a torch that is already there):
#   bash benchmarks/device_check.sh            # writes device_check/ (pytest log, benchmark JSON, nvidia-smi)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-device_check}"
mkdir -p "$out"
python=".venv/bin/python"
[ -x "$python" ] || python=python3
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
"$python" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count())" | tee "$out/torch.txt"
timeout 300 "$python" -m pytest -m gpu tests/gpu -v -p no:cacheprovider 2>&1 | tee "$out/pytest_gpu.txt"
tests=${PIPESTATUS[0]}
timeout 180 "$python" benchmarks/bench_cuda.py 2>&1 | tee "$out/bench_cuda.json"
bench=${PIPESTATUS[0]}
echo "device_check: gpu tests exit $tests, bench_cuda exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
