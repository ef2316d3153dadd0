"""Whether Triton's interpreter (TRITON_INTERPRET=1: the Triton kernels on CPU tensors, how tests
run them without a GPU) can run this library's kernels in this process.

The interpreter holds every scalar, kernel arguments and loaded values alike, as a 1-element
numpy array. Triton 3.6's interpreter turns a loop bound into an int with int() of that array,
which numpy 2.4 and later refuse ("only 0-dimensional arrays can be converted to Python
scalars"); triton 3.8's squeezes it first. Every kernel here loops to a runtime bound (the
product loop to d, the row loop to a loaded item end), and rewriting those loops would change
what compiles on a GPU (the product loop is the one software pipelining works on), where
compiled kernels never meet this. So the pair of versions is detected once, by running a
one-line loop in the interpreter, and the backend refuses with the reason instead of failing
inside the first kernel.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


@triton.jit
def _loop_probe(out_ptr, n):
    total = 0
    for _ in range(0, n):
        total += 1
    tl.store(out_ptr, total)


@functools.cache
def loop_bound_reason() -> str | None:
    """None when the interpreter runs a loop to a runtime bound, else why it cannot (once per process)."""
    import numpy

    out = torch.zeros(1, dtype=torch.int32)
    try:
        _loop_probe[(1,)](out, 3)
    except Exception as error:  # the interpreter wraps what failed in its own error type
        return (
            f"triton {triton.__version__}'s interpreter cannot take a runtime loop bound with numpy "
            f"{numpy.__version__} ({error}); install numpy < 2.4 or a newer triton (3.8 works)"
        )
    if int(out[0]) != 3:
        return f"triton {triton.__version__}'s interpreter ran a 3-step loop {int(out[0])} times"
    return None
