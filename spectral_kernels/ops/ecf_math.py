"""The numbers of the per-element math (csrc/ecf_math.h) for Python: the Triton kernels and every
backend's tests read them here, the C++ kernels from the header (tests/test_ecf_math.py checks
that the two agree).

MAX_FAST_PHASE: the largest |p| the fast sin/cos range reduction takes; a tile (CPU, Triton) or
element (CUDA) with a larger phase takes a full-range routine instead.
SINCOS_MAX_ABS_ERROR: the one stated bound of SPEC §6 on |sin p - sin_64(p)| and
|cos p - cos_64(p)| of every backend's float32 sin/cos, whichever path computes it (the fast
reduction, a full-range routine, or torch's own for the reference), measured against float64 of
the float32 argument itself. It is float32's epsilon, 2^-23: two units in the last place of a
value in [1/2, 1), which is what CUDA's full-range sinf/cosf guarantee (at most 2 ulp), so the
slowest path sets it; the fast reduction stays well inside it (tests/test_sincos_bound.py).
"""

from __future__ import annotations

MAX_FAST_PHASE = 8192.0
SINCOS_MAX_ABS_ERROR = 2.0**-23  # 1.1920928955078125e-07
