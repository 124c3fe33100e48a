"""The warp-shuffle butterfly of the sequential backward (dB/dC channel sums), emulated on CPU.

The generated source is executed with numpy standing in for the 32 lanes of a warp: every
``shfl.sync.bfly`` becomes the lane permutation ``lane ^ mask``. The GPU itself is checked by
benchmarks/check_scan_gpu.py (PTX does not run in Triton's interpreter)."""
import re
import types

import numpy as np
import pytest

from nnunet_mamba.kernels.triton import sequential_source as gen


def _fake_tl():
    def inline_asm_elementwise(asm, constraints, args, dtype, is_pure, pack):
        if "%laneid" in asm:
            return np.arange(32, dtype=np.int64)
        mask = int(re.search(r"shfl\.sync\.bfly\.b32 \$0, \$1, (\d+),", asm).group(1))
        return args[0][np.arange(32) ^ mask]
    return types.SimpleNamespace(where=np.where, inline_asm_elementwise=inline_asm_elementwise, int32=None,
                                 float32=None)


@pytest.mark.parametrize("N", [1, 2, 4, 8, 16, 32])
def test_butterfly_sums_each_state_over_the_32_lanes(N):
    rng = np.random.default_rng(N)
    vals = rng.standard_normal((N, 32))  # vals[n, lane]
    src = gen._Src(N)
    gen._lane_setup(src, 0)
    gen._bfly(src, 0, [f"v[{n}]" for n in range(N)], "r")
    ns = {"tl": _fake_tl(), "v": vals, "d": np.arange(32)}
    exec("\n".join(src.lines), ns)
    n_of_lane, writer = ns["lane_n"], ns["lane_w"]
    assert writer.sum() == N  # one writer per state
    assert sorted(n_of_lane[writer].tolist()) == list(range(N))
    want = vals.sum(1)
    np.testing.assert_allclose(ns["r"][writer], want[n_of_lane[writer]], rtol=1e-12)
    # every lane (not only the writer) holds its state's full sum
    np.testing.assert_allclose(ns["r"], want[n_of_lane], rtol=1e-12)
    shuffles = sum(line.count("shfl.sync") for line in src.lines)
    assert shuffles == (N - 1) + 5 - (N.bit_length() - 1)  # reduce-scatter, then all-reduce
