"""Scan directions over a 1D/2D/3D grid, as pure index arithmetic.

A direction visits every voxel of a grid once. It is described by the order of the
spatial axes (slowest first, fastest last) and whether the visit is reversed.
Step ``t`` of direction ``d`` reads the canonical (row-major) flat position

    t' = L - 1 - t              if d.reverse else t
    (i_a, i_b, i_c) = unravel(t', sizes in scan order)
    pos = i_a * s_a + i_b * s_b + i_c * s_c

with ``s_*`` the canonical strides of the permuted axes. Kernels receive exactly these
seven integers (:func:`scan_geometry`) and never materialise permuted copies.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from math import prod
from typing import Sequence

import torch


@dataclass(frozen=True)
class ScanDirection:
    """Axis order (slowest -> fastest) and direction of one scan."""

    order: tuple[int, ...]
    reverse: bool = False

    def __post_init__(self):
        if sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"ScanDirection.order must be a permutation of 0..{len(self.order) - 1}, got {self.order}")

    @property
    def name(self) -> str:
        axes = "".join("xyz"[a] for a in self.order) if len(self.order) <= 3 else str(self.order)
        return f"{axes}{'-' if self.reverse else '+'}"


def default_directions(ndim: int, k: int) -> tuple[ScanDirection, ...]:
    """The first ``k`` directions of the default set for an ``ndim``-D grid.

    3D: raster (last axis fastest) forward/reverse, first-axis-fastest (SegMamba's
    inter-slice order) forward/reverse, middle-axis-fastest forward/reverse.
    2D: raster forward/reverse, transposed forward/reverse. 1D: forward/reverse.
    """
    if ndim == 3:
        orders = [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    elif ndim == 2:
        orders = [(0, 1), (1, 0)]
    elif ndim == 1:
        orders = [(0,)]
    else:
        raise ValueError(f"scan grids must be 1D, 2D or 3D, got {ndim}D")
    full = [ScanDirection(o, rev) for o in orders for rev in (False, True)]
    if not 1 <= k <= len(full):
        raise ValueError(f"a {ndim}D grid has {len(full)} default directions; asked for {k}")
    return tuple(full[:k])


def scan_geometry(grid: Sequence[int], direction: ScanDirection) -> tuple[int, int, int, int, int, int, bool]:
    """(n_a, n_b, n_c, s_a, s_b, s_c, reverse) for a direction, padded to three axes."""
    return _geometry(tuple(int(g) for g in grid), direction)


@functools.lru_cache(maxsize=4096)
def _geometry(grid: tuple, direction: ScanDirection) -> tuple[int, int, int, int, int, int, bool]:
    if len(direction.order) != len(grid):
        raise ValueError(f"direction {direction.order} does not match a {len(grid)}D grid {grid}")
    strides = [prod(grid[i + 1:]) for i in range(len(grid))]
    sizes = [grid[a] for a in direction.order]
    strd = [strides[a] for a in direction.order]
    while len(sizes) < 3:
        sizes.insert(0, 1)
        strd.insert(0, 0)
    return sizes[0], sizes[1], sizes[2], strd[0], strd[1], strd[2], direction.reverse


def scan_order_index(grid: Sequence[int], direction: ScanDirection, device=None) -> torch.Tensor:
    """Canonical flat position visited at each scan step (a permutation of range(L))."""
    n_a, n_b, n_c, s_a, s_b, s_c, rev = scan_geometry(grid, direction)
    t = torch.arange(n_a * n_b * n_c, device=device)
    if rev:
        t = t.flip(0)
    i_c = t % n_c
    i_b = (t // n_c) % n_b
    i_a = t // (n_c * n_b)
    return i_a * s_a + i_b * s_b + i_c * s_c


def encode_directions(directions: Sequence[ScanDirection]) -> list[int]:
    """Flatten directions to a list of ints (for torch.library ops): ndim, then per direction order + reverse."""
    if not directions:
        raise ValueError("at least one scan direction is required")
    ndim = len(directions[0].order)
    out = [ndim]
    for d in directions:
        if len(d.order) != ndim:
            raise ValueError("all directions must have the same number of axes")
        out.extend(d.order)
        out.append(int(d.reverse))
    return out


def decode_directions(code: Sequence[int]) -> tuple[ScanDirection, ...]:
    ndim = int(code[0])
    step = ndim + 1
    body = list(code[1:])
    if ndim < 1 or len(body) % step:
        raise ValueError(f"malformed direction code {list(code)}")
    return tuple(ScanDirection(tuple(body[i:i + ndim]), bool(body[i + ndim])) for i in range(0, len(body), step))
