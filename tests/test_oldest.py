"""What the oldest supported versions (`make test-oldest`: torch 2.11.0, triton 3.6.0) need of the
library beyond passing the rest of the suite."""

import operator

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels.ops import triton_ecf

pytestmark = pytest.mark.skipif(
    "triton" not in sk.available_backends() or not triton_ecf.INTERPRETED,
    reason="needs triton running in its interpreter (TRITON_INTERPRET=1, no GPU)",
)


def test_an_interpreter_that_cannot_take_runtime_loop_bounds_is_refused_by_name(monkeypatch):
    """Triton 3.6's interpreter makes a loop bound an int with int() of a 1-element array, which
    numpy >= 2.4 refuses, so every kernel here failed deep inside the interpreter. The same
    failure is made on any version by giving the interpreter's tensors a strict __index__; the
    backend must then say why it cannot run, and name the way out, before any kernel starts."""
    from triton.runtime import interpreter

    from spectral_kernels.ops import triton_interpreter

    original = interpreter._patch_lang_tensor

    def strict_index(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: operator.index(self.handle.data))

    monkeypatch.setattr(interpreter, "_patch_lang_tensor", strict_index)
    triton_interpreter.loop_bound_reason.cache_clear()
    try:
        reason = sk.ops.get_backend("triton").unsupported_reason(torch.empty(1))
        assert reason is not None and "loop bound" in reason and "numpy < 2.4" in reason, reason
        g = torch.Generator().manual_seed(0)
        real, syn, t = torch.randn(8, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g)
        with pytest.raises(ValueError, match="backend='triton' cannot run here: .*numpy < 2.4"):
            sk.sdd(real, syn, t=t, backend="triton")
        # auto never picks triton for CPU tensors, so the default path is untouched.
        assert sk.ops.resolve("auto", real).name != "triton"
    finally:
        monkeypatch.undo()
        triton_interpreter.loop_bound_reason.cache_clear()
    # In this environment the interpreter takes the bounds (the rest of the suite runs the kernels).
    assert sk.ops.get_backend("triton").unsupported_reason(torch.empty(1)) is None
