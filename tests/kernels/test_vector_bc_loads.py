"""The 16-byte vector loads of B/C in the sequential kernels, emulated on CPU.

The generated load code (inline PTX ``ld.global.nc.v4.b32``, bf16 unpacked by shifts) is executed with
numpy standing in for memory, so the word order and the bf16 unpacking are checked against the stored
values. The GPU runs it in benchmarks/check_scan_gpu.py (PTX does not run in Triton's interpreter)."""
import re
import types

import numpy as np
import pytest
import torch

pytest.importorskip("triton")
from nnunet_mamba.kernels.triton import sequential_source as gen  # noqa: E402


class _Word(np.ndarray):
    def to(self, dtype, bitcast=False):
        assert bitcast
        return np.asarray(self).astype(np.int32).view(np.float32)


class _Ptr:
    def __init__(self, raw: bytes, itemsize: int, offset: int = 0):
        self.raw, self.itemsize, self.offset = raw, itemsize, offset

    def __add__(self, k):
        return _Ptr(self.raw, self.itemsize, self.offset + int(k))


def _fake_tl():
    def inline_asm_elementwise(asm, constraints, args, dtype, is_pure, pack):
        assert re.fullmatch(r"ld\.global\.nc\.v4\.b32 \{\$0, \$1, \$2, \$3\}, \[\$4\];", asm)
        p = args[0]
        start = p.offset * p.itemsize
        assert start % 16 == 0, "vector load not 16-byte aligned"
        words = np.frombuffer(p.raw[start:start + 16], dtype=np.int32)
        return tuple(np.array(w, dtype=np.int32).view(_Word) for w in words)
    return types.SimpleNamespace(inline_asm_elementwise=inline_asm_elementwise, int32=None, float32=None)


@pytest.mark.parametrize("dtype,kind", [(torch.bfloat16, 1), (torch.float32, 2)])
@pytest.mark.parametrize("N", [8, 16, 32])
def test_vector_loads_unpack_the_stored_values(dtype, kind, N):
    rows = torch.randn(3, N).to(dtype)  # three steps' worth of B values
    raw = rows.view(torch.int16 if dtype == torch.bfloat16 else torch.int32).numpy().tobytes()
    src = gen._Src(N)
    gen._load_states(src, 0, "B0_", "Bm + bo0", "tm0")
    body = "\n".join(src.lines)
    branch = body.split("elif VEC_BC == 2:")[0 if kind == 1 else 1].split("else:")[0]
    branch = "\n".join(line[4:] for line in branch.splitlines()[1:])  # drop the `if` line, dedent
    for row in range(3):
        ns = {"tl": _fake_tl(), "Bm": _Ptr(raw, rows.element_size()), "bo0": row * N}
        exec(branch, ns)
        got = np.array([float(ns[f"B0_{n}"]) for n in range(N)])
        np.testing.assert_array_equal(got, rows[row].float().numpy())
