"""The sequential kernels' divisions by a direction's axis sizes: multiply-high and shift constants
(``common.division_magic``), checked against Python's floor division with the kernel's 32-bit arithmetic.
The kernels themselves run them in the interpreter tests (odd grids, every direction order)."""
from __future__ import annotations

import random

import pytest

pytest.importorskip("triton")

from nnunet_mamba.kernels.triton.common import division_magic, position_args  # noqa: E402


def kernel_quotient(n: int, d: int) -> int:
    """What ``positions_magic`` computes: umulhi(2n, m) >> shift on uint32 values."""
    m, shift = division_magic(d)
    assert -(2 ** 31) <= m < 2 ** 31 and 0 <= shift <= 31  # fits the kernels' int32 arguments
    m_u = m & 0xFFFFFFFF
    two_n = (2 * n) & 0xFFFFFFFF  # int32 t * 2 wraps; its bit pattern read as uint32
    return ((two_n * m_u) >> 32) >> shift


def divisors():
    rng = random.Random(7)
    ds = set(range(1, 2050))
    for k in range(1, 31):
        ds |= {2 ** k - 1, 2 ** k, 2 ** k + 1}
    ds |= {rng.randrange(1, 2 ** 31) for _ in range(500)}
    ds.add(2 ** 31 - 1)
    return sorted(d for d in ds if d < 2 ** 31)


def test_quotients_match_floor_division_for_every_31_bit_dividend():
    rng = random.Random(11)
    for d in divisors():
        ns = {0, 1, d - 1, d, d + 1, 2 ** 31 - 1, 2 ** 31 - 2, (2 ** 31 - 1) // d * d, (2 ** 31 - 1) // d * d - 1}
        ns |= {rng.randrange(0, 2 ** 31) for _ in range(40)}
        ns |= {rng.randrange(0, min(2 ** 31, 64 * d)) for _ in range(40)}
        for n in ns:
            if 0 <= n < 2 ** 31:
                assert kernel_quotient(n, d) == n // d, (n, d)


def test_position_args_pair_both_axes_and_reject_bad_sizes():
    assert position_args(3, 5) == (*division_magic(3), *division_magic(5))
    for bad in (0, -4, 2 ** 31):
        with pytest.raises(ValueError, match="divisor"):
            division_magic(bad)
