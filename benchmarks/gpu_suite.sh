#!/usr/bin/env bash
# On a CUDA machine: build, run the GPU tests and the GPU benchmark, and write the results
# under benchmarks/results/ (or $RESULTS_DIR), each file named after the GPU.
#
#     bash benchmarks/gpu_suite.sh                 # both stages below (not yet timed on a GPU: where
#                                                  # calls are time-limited, run them separately)
#     bash benchmarks/gpu_suite.sh tests           # build + GPU tests only
#     bash benchmarks/gpu_suite.sh bench [--quick] [--precisions tf32]
#                                                  # build + benchmark only (--quick: a short smoke run);
#                                                  # the figure point runs first and results are
#                                                  # rewritten after every case, so a run cut short keeps them
#
# Python: $PYTHON if set; else this checkout's .venv if there is one; else a python3 whose torch
# sees a GPU (a machine image with PyTorch preinstalled and no network: the extension is then
# built in place against that torch, nothing is downloaded); else `make install` makes .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
case "$STAGE" in
  all | tests | bench) shift || true ;;
  --*) STAGE=all ;;
  *) echo "gpu_suite.sh: stage must be all, tests or bench, got '$STAGE'" >&2; exit 2 ;;
esac

if [[ -n "${PYTHON:-}" ]]; then
  PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
elif python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  PY=python3
else
  make install
  PY=.venv/bin/python
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_suite.sh: torch sees no CUDA GPU')"

# Build the C++ extension in place against this torch (the Triton kernels need no build); with
# nvcc there it includes the CUDA kernels (FORCE_CUDA=1: fail loudly rather than build without).
FORCE_CUDA=${FORCE_CUDA:-1} MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py -q build_ext --inplace >/dev/null
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

RESULTS=${RESULTS_DIR:-benchmarks/results}
mkdir -p "$RESULTS"
GPU=$("$PY" -c "import torch; print(''.join(c if c.isalnum() else '_' for c in torch.cuda.get_device_name()).strip('_').lower())")
VERSIONS=$("$PY" -c "import torch, triton; from spectral_kernels.ops.cuda import built_cuda_version as v; print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}, _C built for CUDA {v()}')")
echo "gpu_suite.sh: $VERSIONS"

STATUS=0
if [[ "$STAGE" == all || "$STAGE" == tests ]]; then
  # The kernel tests (test_backends runs the compiled Triton kernels on CUDA tensors at awkward
  # sizes), the real-size GPU checks, the sin/cos epilogue and the sm_90 compile check. A
  # failure is reported at the end; the benchmark still runs, so one call brings back both.
  # SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 runs the first tile shape untimed, which keeps Triton's
  # compiles within the call; test_backends checks every autotune shape on its own.
  TESTS="tests/test_gpu.py tests/test_backends.py tests/test_triton_sincos.py tests/test_triton_compile.py"
  TESTS="$TESTS tests/test_ecf_math.py tests/test_chunk_walk.py tests/test_cuda_compile.py"
  { echo "# $VERSIONS"; echo "# SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 $PY -m pytest -q $TESTS"
    SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 "$PY" -m pytest -q -p no:cacheprovider $TESTS 2>&1
  } | tee "$RESULTS/gpu_tests_${GPU}.txt" || STATUS=1
fi

if [[ "$STAGE" == all || "$STAGE" == bench ]]; then
  "$PY" benchmarks/bench_ops.py --device cuda --out "$RESULTS/ops_cuda_${GPU}" "$@" 2>&1 | tee "$RESULTS/ops_cuda_${GPU}.log" || STATUS=1
fi
exit $STATUS
