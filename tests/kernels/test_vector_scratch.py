"""The sequential backward's sub-chunk scratch, (rows, D, N) with a lane's states contiguous, emulated on CPU.

The generated store / load code of both paths (16-byte inline-PTX vectors with ``VEC_SCR``, one access per state
without) runs with numpy standing in for memory and for the warp's lanes: the two paths must agree on the layout,
masked lanes (channels past D) must store nothing, and their vector loads must read finite values. The GPU runs the
vector path in benchmarks/check_scan_gpu.py (PTX does not run in Triton's interpreter)."""
import re
import types

import numpy as np
import pytest

from nnunet_mamba.kernels import triton_scan as T
from nnunet_mamba.kernels import triton_seq

D, BD, ROWS = 5, 8, 3  # 8 lanes, the last three past the channels


class _Lanes(np.ndarray):
    def to(self, dtype):
        return np.asarray(self).astype(np.int32)


class _Ptr:
    def __init__(self, mem, off):
        self.mem, self.off = mem, np.asarray(off)

    def __add__(self, k):
        return _Ptr(self.mem, self.off + np.asarray(k))

    def to(self, dtype):  # the kernel's int64 view of the pointer for the store's asm
        return self


def _fake_tl(mem):
    def inline_asm_elementwise(asm, constraints, args, dtype, is_pure, pack):
        p = args[0]
        assert np.all(p.off % 4 == 0), "vector access not 16-byte aligned"
        if re.search(r"@p st\.global\.v4\.f32 \[\$1\], \{\$2, \$3, \$4, \$5\}", asm):
            assert constraints == "=r,l,f,f,f,f,r" and not is_pure and "setp.ne.b32 p, $6, 0" in asm
            values, mask = args[1:5], np.asarray(args[5]).astype(bool)
            for lane in np.flatnonzero(mask):
                mem[p.off[lane]:p.off[lane] + 4] = [v[lane] for v in values]
            return np.zeros(BD, np.int32)
        assert re.fullmatch(r"ld\.global\.v4\.f32 \{\$0, \$1, \$2, \$3\}, \[\$4\];", asm) and is_pure
        assert np.all((p.off >= 0) & (p.off + 4 <= mem.size)), "vector load outside the scratch"
        return tuple(mem[p.off + j] for j in range(4))

    def store(ptr, value, mask):
        mem[ptr.off[mask]] = np.asarray(value)[mask]

    def load(ptr, mask, other):
        return np.where(mask, mem[np.where(mask, ptr.off, 0)], other)

    return types.SimpleNamespace(inline_asm_elementwise=inline_asm_elementwise, store=store, load=load,
                                 minimum=np.minimum, int32=None, int64=None, float32=None)


def _branches(lines):
    """(vector branch, scalar branch) of an ``if VEC_SCR: ... else: ...`` block, dedented."""
    text = "\n".join(lines)
    vec, scal = text.split("\nelse:\n")
    dedent = lambda block: "\n".join(line[4:] for line in block.splitlines() if line.startswith("    "))
    return dedent(vec), dedent(scal)


def _run(code, mem, N, split, **names):
    lanes = np.arange(BD)
    ns = dict(tl=_fake_tl(mem), scr=_Ptr(mem, 0), D=D, N=N, d=lanes // split, part=lanes % split,
              dmask=(lanes // split < D).view(_Lanes), **names)
    exec(code, ns)
    return ns


@pytest.mark.parametrize("N,split", [(8, 1), (16, 1), (8, 2)])
def test_vector_and_scalar_scratch_paths_share_the_layout(N, split):
    NL = N // split
    src = triton_seq._Src(split, NL)
    triton_seq._scr_store(src, 0, "row")
    vec_store, scal_store = _branches(src.lines)
    src = triton_seq._Src(split, NL)
    triton_seq._scr_load(src, 0, "row", var="g")
    vec_load, scal_load = _branches(src.lines)
    rng = np.random.default_rng()
    for store in (vec_store, scal_store):
        mem = np.full(ROWS * D * N, np.nan, np.float32)
        h = {f"h{n}": rng.standard_normal(BD).astype(np.float32) for n in range(NL)}
        _run(store, mem, N, split, row=1, **h)
        lanes = np.arange(BD)
        expect = np.full((ROWS, D, N), np.nan, np.float32)  # (rows, D, N): lane's channel, its part of the states
        for lane in lanes[lanes // split < D]:
            for n in range(NL):
                expect[1, lane // split, (lane % split) * NL + n] = h[f"h{n}"][lane]
        np.testing.assert_array_equal(mem.reshape(ROWS, D, N), expect)  # masked lanes stored nothing
        live = lanes // split < D
        for load in (vec_load, scal_load):
            ns = _run(load, mem, N, split, row=1)
            for n in range(NL):
                np.testing.assert_array_equal(ns[f"g{n}"][live], h[f"h{n}"][live])
                assert np.all(np.isfinite(ns[f"g{n}"]))  # masked lanes: zeros or the last channel's states


def test_vector_scratch_is_used_only_where_it_can_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_VEC_SCR", raising=False)
    assert T._vector_scratch({}, 16, 1) and T._vector_scratch({}, 16, 4)
    assert not T._vector_scratch({}, 16, 8)  # two states per lane
    assert not T._vector_scratch({}, 6, 1)
    assert not T._vector_scratch({"vec_scr": False}, 16, 1)
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_VEC_SCR", "0")
    assert not T._vector_scratch({}, 16, 1)
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_VEC_SCR", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not T._vector_scratch({}, 16, 1)


def test_states_per_lane_that_fill_no_vector_stop_the_compile():
    src = triton_seq._Src(1, 6)
    triton_seq._scr_store(src, 0, "row")
    triton_seq._scr_load(src, 0, "row")
    assert sum("tl.static_assert(False, 'VEC_SCR needs" in line for line in src.lines) == 2
