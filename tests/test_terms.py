import torch

from spectral_kernels.safe_math import safe_sqrt
from spectral_kernels.terms import amplitude_phase, modulus


def test_amplitude_plus_phase_equals_squared_difference(rng):
    re_p, im_p, re_q, im_q = (torch.randn(7, 13, generator=rng, dtype=torch.float64) for _ in range(4))
    amplitude, phase = amplitude_phase(re_p, im_p, re_q, im_q)
    expected = (re_p - re_q) ** 2 + (im_p - im_q) ** 2
    torch.testing.assert_close(amplitude + phase, expected, rtol=1e-12, atol=1e-12)


def test_phase_is_two_moduli_times_one_minus_cos_angle(rng):
    re_p, im_p, re_q, im_q = (torch.randn(50, generator=rng, dtype=torch.float64) for _ in range(4))
    _, phase = amplitude_phase(re_p, im_p, re_q, im_q)
    angle = torch.atan2(im_p, re_p) - torch.atan2(im_q, re_q)
    expected = 2 * modulus(re_p, im_p) * modulus(re_q, im_q) * (1 - torch.cos(angle))
    torch.testing.assert_close(phase, expected, rtol=1e-10, atol=1e-12)


def test_modulus_gradient_at_zero_is_zero_not_nan():
    re = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    im = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    re_q = torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64)
    amplitude, phase = amplitude_phase(re, im, re_q, torch.zeros(3, dtype=torch.float64))
    (amplitude + phase).sum().backward()
    assert torch.isfinite(re.grad).all() and torch.isfinite(im.grad).all()
    # A + H = |P - Q|^2 whose gradient in re_P at P = 0 is -2 re_Q: the convention keeps it exact.
    torch.testing.assert_close(re.grad, -2 * re_q)


def test_safe_sqrt_has_zero_gradient_at_zero_and_exact_gradient_elsewhere():
    x = torch.tensor([0.0, 4.0], dtype=torch.float64, requires_grad=True)
    safe_sqrt(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 0.25], dtype=torch.float64))
