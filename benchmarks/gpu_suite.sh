#!/usr/bin/env bash
# On a CUDA machine: build, check, test and benchmark, writing the results under
# benchmarks/results/ (or $RESULTS_DIR), each file named after the GPU.
#
#     bash benchmarks/gpu_suite.sh smoke           # first contact, meant to take ~3 min (never yet run): build for
#                                                  # this GPU only, versions, every backend against the
#                                                  # reference, one distill step + 1-epoch evaluation
#                                                  # on cuda, peak memory (benchmarks/gpu_smoke.py)
#     bash benchmarks/gpu_suite.sh tests           # build + GPU tests only
#     bash benchmarks/gpu_suite.sh bench [--quick] [--precisions tf32]
#                                                  # build + benchmark only (--quick: a short smoke run);
#                                                  # the figure point runs first and results are
#                                                  # rewritten after every case, so a run cut short keeps them
#     bash benchmarks/gpu_suite.sh [all]           # tests, then bench (where calls are time-limited,
#                                                  # run the stages separately: each is meant to fit 8 minutes)
#
# Python: $PYTHON if set; else this checkout's .venv if there is one; else the system python3 (a
# machine image with PyTorch preinstalled and no network: the extension is built in place against
# that torch, nothing is downloaded). Without a GPU it stops at once (exit 1), before building.
# The extension is built for this GPU's architecture only (TORCH_CUDA_ARCH_LIST from the device,
# unless set). A failed CUDA build is reported (its log kept) and the CPU-only extension is built
# instead, so the Triton stages still run; the run then exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '4,15p' "$0" | sed 's/^# \{0,1\}//' >&2; }
STAGE=${1:-all}
case "$STAGE" in
  all | smoke | tests | bench) shift || true ;;
  -h | --help) usage; exit 0 ;;
  --*) STAGE=all ;;  # bench options with the default stage
  *) echo "gpu_suite.sh: stage must be smoke, tests, bench or all, got '$STAGE'" >&2; usage; exit 2 ;;
esac
if [[ "$STAGE" == smoke || "$STAGE" == tests ]] && [[ $# -gt 0 ]]; then
  echo "gpu_suite.sh: stage '$STAGE' takes no options, got '$*'" >&2
  exit 2
fi

if [[ -n "${PYTHON:-}" ]]; then
  PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=python3
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_suite.sh: $PY cannot import torch; set PYTHON to a Python with torch, or run 'make install'" >&2
  exit 1
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_suite.sh: torch ($(command -v "$PY")) sees no CUDA GPU; nothing was built or run')"

RESULTS=${RESULTS_DIR:-benchmarks/results}
mkdir -p "$RESULTS"
GPU=$("$PY" -c "import torch; print(''.join(c if c.isalnum() else '_' for c in torch.cuda.get_device_name()).strip('_').lower())")
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STATUS=0

# Build the C++ extension in place against this torch (the Triton kernels need no build); with
# nvcc there it includes the CUDA kernels (FORCE_CUDA=1: fail loudly rather than build without).
# If that fails, the CPU-only build keeps the cpu/reference backends and every Triton stage alive.
BUILD_LOG="$RESULTS/build_${GPU}.log"
began=$SECONDS
if FORCE_CUDA=${FORCE_CUDA:-1} MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py build_ext --inplace >"$BUILD_LOG" 2>&1; then
  echo "gpu_suite.sh: built for sm_${TORCH_CUDA_ARCH_LIST//./} in $((SECONDS - began)) s (log: $BUILD_LOG)"
else
  STATUS=1
  echo "gpu_suite.sh: the CUDA build FAILED (last lines below, all in $BUILD_LOG); building without CUDA so the Triton stages still run" >&2
  tail -n 25 "$BUILD_LOG" >&2
  FORCE_CPU=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py build_ext --inplace >>"$BUILD_LOG" 2>&1 \
    || echo "gpu_suite.sh: the CPU-only build failed too (see $BUILD_LOG)" >&2
fi
VERSIONS=$("$PY" -c "import torch, triton; from spectral_kernels.ops.cuda import built_cuda_version as v; print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}, _C built for CUDA {v()}')" 2>&1 || true)
echo "gpu_suite.sh: $VERSIONS"

if [[ "$STAGE" == smoke ]]; then
  # One untimed tile shape per dtype: autotuning would compile and time six per kernel.
  { echo "# $VERSIONS"; echo "# SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 $PY benchmarks/gpu_smoke.py"
    SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 "$PY" benchmarks/gpu_smoke.py 2>&1
  } | tee "$RESULTS/gpu_smoke_${GPU}.txt" || STATUS=1
fi

if [[ "$STAGE" == all || "$STAGE" == tests ]]; then
  # The kernel tests (test_backends runs the compiled Triton kernels on CUDA tensors at awkward
  # sizes), the real-size GPU checks, the sin/cos epilogue and the sm_90 compile check. A
  # failure is reported at the end; the benchmark still runs, so one call brings back both.
  # SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 runs one tile shape per dtype untimed, which keeps Triton's
  # compiles within the call; test_backends checks every autotune shape on its own.
  TESTS="tests/test_gpu.py tests/test_backends.py tests/test_triton_sincos.py tests/test_triton_compile.py"
  TESTS="$TESTS tests/test_gpu_defects.py tests/test_ecf_math.py tests/test_chunk_walk.py tests/test_cuda_compile.py"
  TESTS="$TESTS tests/test_sincos_bound.py tests/test_backend_protocol.py"  # SPEC §6's bound; SORF on each backend
  TESTS="$TESTS tests/test_autocast.py tests/test_hw_round4.py"  # autocast on the GPU's fused ops; native bf16/fp16 dots
  { echo "# $VERSIONS"; echo "# SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 $PY -m pytest -q $TESTS"
    SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 "$PY" -m pytest -q -p no:cacheprovider $TESTS 2>&1
  } | tee "$RESULTS/gpu_tests_${GPU}.txt" || STATUS=1
fi

if [[ "$STAGE" == all || "$STAGE" == bench ]]; then
  "$PY" benchmarks/bench_ops.py --device cuda --out "$RESULTS/ops_cuda_${GPU}" "$@" 2>&1 | tee "$RESULTS/ops_cuda_${GPU}.log" || STATUS=1
fi
exit $STATUS
