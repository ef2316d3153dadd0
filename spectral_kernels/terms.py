"""Amplitude and phase terms of two characteristic functions (SPEC §2).

The one place where the math after the ECF lives: every backend supplies ECF sums, and every
discrepancy (NCFD, SDD, CSDM) is built from the terms computed here.
"""

from __future__ import annotations

import torch

from .safe_math import safe_sqrt


def modulus(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """|z| = sqrt(re^2 + im^2), with d|z| = 0 at z = 0 (SPEC §2)."""
    return safe_sqrt(re * re + im * im)


def amplitude_phase(
    re_p: torch.Tensor, im_p: torch.Tensor, re_q: torch.Tensor, im_q: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The amplitude term A and the phase term H of SPEC §2, elementwise.

    A = (|P| - |Q|)^2,  H = 2 (|P||Q| - re_P re_Q - im_P im_Q),  A + H = |P - Q|^2.
    H >= 0 mathematically; it can be a rounding error below 0, which NCFD clamps.
    """
    abs_p, abs_q = modulus(re_p, im_p), modulus(re_q, im_q)
    amplitude = (abs_p - abs_q) ** 2
    phase = 2.0 * (abs_p * abs_q - re_p * re_q - im_p * im_q)
    return amplitude, phase
