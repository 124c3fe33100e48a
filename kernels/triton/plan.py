"""Every configuration decision of the Triton scan, made in one place from named constants.

Two kernel families serve the scan (``benchmarks/SCAN_NOTES.md`` has the design and the measurements behind each
constant):

* the *sequential* family (:mod:`.sequential`): one lane per channel keeps all N states in registers and walks
  its chunk step by step; chunk carries join the chunks. It serves every map longer than one chunk of the other
  family, and shorter maps whose batch x channels alone fill the GPU.
* the *chunked* family (:mod:`.chunked`): a ``(CHUNK, 16)`` tile of steps x channels, scanned with
  ``tl.associative_scan`` one state at a time; it serves the remaining maps of at most ``CHUNK`` steps (e.g. a
  4^3 bottleneck at batch 2), where the sequential walk would leave most of the GPU idle.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..dispatch import triton_interpreting

CHUNK = 64  # the chunked family's tile length: it serves maps of at most one tile (no carries)
CHUNK_BD, CHUNK_WARPS = 16, 4  # its channels per tile and warps per program (latency-bound short maps)
SEQ_BD = 32  # channels per one-warp program of the sequential family: one per lane
SEQ_MIN_T, SEQ_MAX_T = 16, 256  # its chunk lengths
SEQ_PROGRAMS = 4096  # one-warp programs per direction that keep every SM of a large GPU busy
SEQ_MAX_CHUNKS = 64  # at most this many chunks per sequence: the carry pass walks them one after another
SUB_CHUNK = 2  # steps whose states the sequential backward keeps in registers between its two walks (no spills)
CARRY_ROWS = 16  # chunks per tile of the carry pass; 64 from CARRY_ROWS_LONG chunks on (fewer sequential steps)
CARRY_ROWS_LONG = 256
INT32_MAX = 2 ** 31 - 1


def cdiv(a: int, b: int) -> int:
    """Ceiling division on the host (``triton.cdiv`` is a JIT function: slow to call from Python)."""
    return -(-a // b)


@dataclass(frozen=True)
class Plan:
    sequential: bool  # which kernel family
    T: int  # steps per chunk
    BD: int  # channels per program
    num_warps: int
    nC: int  # chunks per sequence
    nDB: int  # channel blocks
    bc: str  # how the backward's dB / dC leave: "store" (one channel block), "atomic" (fp32), "slabs" (summed later)
    vec_bc: int  # sequential: B / C loaded as 16-byte vectors of bf16 (1) or fp32 (2) values, or one by one (0)
    shuffles: bool  # sequential: channel sums of dB / dC by a butterfly of warp shuffles, else tl.sum
    prefetch: bool  # sequential: the next iteration's lines prefetched into L2
    i64: bool  # index math in int64

    @property
    def carries(self) -> bool:
        """Whether the forward hands its chunk carries to the backward."""
        return self.sequential and self.nC > 1


def seq_programs(L: int, D: int, Bsz: int, T: int = SEQ_MIN_T) -> int:
    """One-warp programs per direction of the sequential family with T-step chunks."""
    return cdiv(D, SEQ_BD) * Bsz * cdiv(L, T)


def seq_chunk(L: int, D: int, Bsz: int) -> int:
    """The longest chunk that still gives ``SEQ_PROGRAMS`` programs per direction, but no shorter than it takes to
    cut the sequence into at most ``SEQ_MAX_CHUNKS`` chunks."""
    T = SEQ_MAX_T
    while T > SEQ_MIN_T and seq_programs(L, D, Bsz, T) < SEQ_PROGRAMS and cdiv(L, T // 2) <= SEQ_MAX_CHUNKS:
        T //= 2
    return T


def is_sequential(Bsz: int, L: int, D: int) -> bool:
    return L > CHUNK or seq_programs(L, D, Bsz) >= SEQ_PROGRAMS


@functools.lru_cache(maxsize=4096)
def plan(Bsz: int, L: int, D: int, K: int, N: int, bc_dtype: torch.dtype, bc_aligned: bool, deterministic: bool,
         bwd: bool) -> Plan:
    """The plan of one pass (``bwd``: the backward) for these sizes; ``bc_dtype``: B's and C's dtype (None where they
    differ), ``bc_aligned``: both 16-byte aligned."""
    sequential = is_sequential(Bsz, L, D)
    if sequential:
        T, BD, warps = seq_chunk(L, D, Bsz), SEQ_BD, 1
    else:
        T, BD, warps = CHUNK, CHUNK_BD, CHUNK_WARPS
    nC, nDB = cdiv(L, T), cdiv(D, BD)
    bc = "store" if nDB == 1 else ("slabs" if deterministic else "atomic")
    vec_bc = 0
    itemsize = {torch.bfloat16: 2, torch.float32: 4}.get(bc_dtype)
    if sequential and itemsize and bc_aligned and (N * itemsize) % 16 == 0 and not triton_interpreting():
        vec_bc = 1 if itemsize == 2 else 2
    shuffles = sequential and not triton_interpreting() and N & (N - 1) == 0 and N <= 32
    biggest = max(Bsz * L * K * max(D, N), Bsz * 2 * K * nC * N * D, Bsz * L * D)
    if bwd and sequential:
        biggest = max(biggest, Bsz * nC * (T // SUB_CHUNK) * N * D)  # the sub-chunk state scratch
    if bwd and bc == "slabs":
        biggest = max(biggest, nDB * Bsz * L * K * N)
    return Plan(sequential, T, BD, warps, nC, nDB, bc, vec_bc, shuffles, sequential and not triton_interpreting(),
                biggest >= INT32_MAX)


def carries_shape(Bsz: int, L: int, D: int, K: int, N: int) -> tuple:
    """Shape of the chunk carries that the forward hands the backward; ``(0,)`` where it hands none."""
    if not is_sequential(Bsz, L, D):
        return (0,)
    nC = cdiv(L, seq_chunk(L, D, Bsz))
    return (Bsz, 1, K, nC, N, D) if nC > 1 else (0,)
