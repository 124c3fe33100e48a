"""The warp-shuffle butterfly of the sequential backward (dB/dC channel sums), emulated on CPU.

The generated source is executed with numpy standing in for the 32 lanes of a warp: every
``shfl.sync.bfly`` becomes the lane permutation ``lane ^ mask``. The GPU itself is checked by
benchmarks/check_scan_gpu.py (PTX does not run in Triton's interpreter)."""
import re
import types

import numpy as np
import pytest

from nnunet_mamba.kernels import triton_seq


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
    src = triton_seq._Src()
    triton_seq._lane_setup(src, 0, N)
    triton_seq._bfly(src, 0, [f"v[{n}]" for n in range(N)], "r")
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


def test_butterfly_is_used_only_where_it_can_run(monkeypatch):
    from nnunet_mamba.kernels import triton_scan as T
    cfg = {"BLOCK_D": 32, "num_warps": 1}
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_DETERMINISTIC", raising=False)
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SHFL", raising=False)
    assert T._use_shuffles(cfg, 16)
    assert not T._use_shuffles(cfg, 12)  # not a power of two
    assert not T._use_shuffles({"BLOCK_D": 64, "num_warps": 2}, 16)
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_DETERMINISTIC", "1")  # slabs: one storing lane per sum, shuffles fine
    assert T._use_shuffles(cfg, 16)
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SHFL", "0")
    assert not T._use_shuffles(cfg, 16)
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SHFL")
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_DETERMINISTIC")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not T._use_shuffles(cfg, 16)


@pytest.mark.parametrize("split,N", [(2, 2), (2, 8), (2, 16), (2, 32), (4, 4), (4, 16), (4, 32)])
def test_butterfly_with_states_split_over_lanes(split, N):
    """``split`` adjacent lanes share a channel (lane = channel * split + part), each holding N / split states:
    the butterfly sums each state over the 32 / split channels, one writer per state."""
    NL = N // split
    rng = np.random.default_rng(N * split)
    vals = rng.standard_normal((NL, 32))  # vals[n, lane]: state (lane % split) * NL + n of channel lane // split
    src = triton_seq._Src(split, NL)
    triton_seq._lane_setup(src, 0, N)
    triton_seq._bfly(src, 0, [f"v[{n}]" for n in range(NL)], "r")
    ns = {"tl": _fake_tl(), "v": vals, "d": np.arange(32)}
    exec("\n".join(src.lines), ns)
    lanes = np.arange(32)
    want = np.zeros(N)
    for n in range(NL):
        for part in range(split):
            want[part * NL + n] = vals[n, lanes % split == part].sum()
    n_of_lane, writer = ns["lane_n"], ns["lane_w"]
    assert writer.sum() == N and sorted(n_of_lane[writer].tolist()) == list(range(N))
    np.testing.assert_allclose(ns["r"], want[n_of_lane], rtol=1e-12)


@pytest.mark.parametrize("split", [2, 4])
def test_part_sum_adds_the_lanes_of_a_channel(split):
    """The shuffle branch of ``_part_sum``: every lane ends with the sum over the ``split`` lanes of its channel."""
    x = np.random.default_rng(split).standard_normal(32)
    src = triton_seq._Src(split, 16 // split)
    triton_seq._part_sum(src, 0, "x")
    body = "\n".join(src.lines).split("else:")[0]
    body = "\n".join(line[4:] for line in body.splitlines()[1:])  # the `if SHFL:` branch, dedented
    ns = {"tl": _fake_tl(), "x": x.copy()}
    exec(body, ns)
    want = x.reshape(32 // split, split).sum(1).repeat(split)
    np.testing.assert_allclose(ns["x"], want, rtol=1e-12)
