#!/usr/bin/env bash
# On a CUDA machine: build, run the GPU tests and the GPU benchmark, write the results under
# benchmarks/results/ (file names carry the GPU's name). One call does all of it:
#     bash benchmarks/gpu_suite.sh            # add --quick for a short smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
make install
PY=.venv/bin/python
mkdir -p benchmarks/results
GPU=$($PY -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_').lower())")
$PY -m pytest -q tests/test_gpu.py tests/test_backends.py 2>&1 | tee "benchmarks/results/gpu_tests_${GPU}.txt"
$PY benchmarks/bench_ops.py --device cuda "$@" 2>&1 | tee "benchmarks/results/ops_cuda_${GPU}.log"
