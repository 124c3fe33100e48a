"""Device helpers shared by both kernel families: scan-order positions, softplus, int64 widening."""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def positions(t, n_b, n_c, s_a, s_b, s_c):
    """Canonical offsets of scan-order steps ``t`` (see :mod:`..directions`)."""
    i_c = t % n_c
    r = t // n_c
    i_b = r % n_b
    i_a = r // n_b
    return i_a * s_a + i_b * s_b + i_c * s_c


@triton.jit
def positions_magic(t, n_b, n_c, s_a, s_b, s_c, mul_b, shr_b, mul_c, shr_c):
    """:func:`positions` with both divisions as multiply-high and shift (constants from :func:`position_args`):
    about 30 fewer integer instructions per step of a walk than general divisions. Needs ``t`` < 2^31."""
    r = (tl.umulhi((t * 2).to(tl.uint32, bitcast=True), mul_c.to(tl.uint32, bitcast=True)) >> shr_c).to(tl.int32)
    i_a = (tl.umulhi((r * 2).to(tl.uint32, bitcast=True), mul_b.to(tl.uint32, bitcast=True)) >> shr_b).to(tl.int32)
    return i_a * s_a + (r - i_a * n_b) * s_b + (t - r * n_c) * s_c


def division_magic(d: int) -> tuple:
    """(multiplier as an int32 bit pattern, shift) with ``floor(n / d) == umulhi(2 n, m) >> shift`` for
    0 <= n < 2^31 (Granlund and Montgomery 1994, Theorem 4.2 with N = 31: ``m = ceil(2^(31+l) / d)``,
    ``l = ceil(log2 d)``, so ``m < 2^32``)."""
    if not 1 <= d < 2 ** 31:
        raise ValueError(f"divisor {d} out of range")
    shift = (d - 1).bit_length()
    m = -(-(1 << (31 + shift)) // d)
    return (m - (1 << 32) if m >= 1 << 31 else m), shift


def position_args(n_b: int, n_c: int) -> tuple:
    """The kernels' ``mul_b, shr_b, mul_c, shr_c`` arguments for a direction's axis sizes ``n_b``, ``n_c``."""
    return (*division_magic(n_b), *division_magic(n_c))


@triton.jit
def comb2(a_l, b_l, a_r, b_r):
    """Combine of the linear recurrence h -> a h + b: (a_l, b_l) then (a_r, b_r)."""
    return a_l * a_r, b_l * a_r + b_r


@triton.jit
def softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def wide(x, I64: tl.constexpr):
    if I64:
        return x.to(tl.int64)
    else:
        return x
