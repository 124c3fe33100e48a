"""The Triton backend's host side (config, buffers, carries, output shapes and dtypes) on ``meta`` tensors with the
launches stubbed out: every kernel family and switch combination the GPU takes, without a GPU or the interpreter."""
import pytest
import torch

T = pytest.importorskip("nnunet_mamba.kernels.triton_scan")
from nnunet_mamba.kernels import param_grads as P  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402


class _NoLaunch:
    def __getitem__(self, grid):
        assert all(isinstance(g, int) and g >= 1 for g in grid), grid
        return lambda *args, **kwargs: None


@pytest.fixture
def stubbed(monkeypatch):
    for module in (T, P):
        monkeypatch.setattr(module, "launcher", lambda fn: _NoLaunch())
    monkeypatch.setattr(T, "triton_interpreting", lambda: False)
    for var in ("SEQ", "SEQ_BWD", "SAVE_CARRIES", "SEQ_PROGRAMS", "SEQ_MAX_CHUNKS", "SEQ_MIN_PROGRAMS"):
        monkeypatch.delenv("NNUNET_MAMBA_SCAN_" + var, raising=False)


def meta(*shape, dtype):
    return torch.empty(shape, device="meta", dtype=dtype)


@pytest.mark.parametrize("Bsz,D,grid,K,dtype", [
    (2, 320, (4, 4, 4), 2, torch.bfloat16),  # single-chunk map: chunked kernels
    (2, 640, (8, 8, 8), 2, torch.bfloat16),  # short map: sequential kernels, 16-step chunks
    (2, 512, (16, 16, 16), 3, torch.bfloat16),  # sequential kernels, 64-step chunks, saved carries
    (1, 96, (64, 64, 64), 1, torch.float32),
    (58, 256, (5, 7, 5), 6, torch.float16),  # large batch, short map: sequential
    (2, 40, (37, 29), 4, torch.float32),  # 2D grid
    (1, 24, (4099,), 2, torch.bfloat16),  # 1D, ragged last chunk
])
def test_outputs_and_gradients_have_the_inputs_shapes_and_dtypes(stubbed, Bsz, D, grid, K, dtype):
    N = 16
    L = 1
    for s in grid:
        L *= s
    u, z, dout = meta(Bsz, L, D, dtype=dtype), meta(Bsz, L, D, dtype=dtype), meta(Bsz, L, D, dtype=dtype)
    delta, Bm, Cm = meta(Bsz, L, K, D, dtype=dtype), meta(Bsz, L, K, N, dtype=dtype), meta(Bsz, L, K, N, dtype=dtype)
    A, Dskip, bias = (meta(K, D, N, dtype=torch.float32), meta(K, D, dtype=torch.float32),
                      meta(K, D, dtype=torch.float32))
    rest = (grid, default_directions(len(grid), K), True)
    out, carries = T.multidir_scan_fwd(u, delta, A, Bm, Cm, Dskip, bias, z, *rest, return_carries=True)
    assert out.shape == u.shape and out.dtype == dtype
    expected = T.carries_shape(Bsz, L, D, K, N)
    assert (carries is None and expected == (0,)) or tuple(carries.shape) == expected
    grads = T.multidir_scan_bwd(dout, u, delta, A, Bm, Cm, Dskip, bias, z, *rest, carries=carries)
    for g, x in zip(grads, (u, delta, A, Bm, Cm, Dskip, bias, z)):
        assert g.shape == x.shape and g.dtype == x.dtype


def test_chunked_forward_with_sequential_backward(stubbed, monkeypatch):
    """``NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS_BWD`` moves only the backward to the sequential kernels: the forward
    hands no carries, the backward starts its summary walks from zero."""
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS_BWD", "1")
    Bsz, D, grid, K, N, L = 2, 320, (4, 4, 4), 3, 16, 64
    assert T._config(L, D, True, Bsz)["seq"] and not T._config(L, D, False, Bsz).get("seq")
    u = meta(Bsz, L, D, dtype=torch.bfloat16)
    delta, Bm = meta(Bsz, L, K, D, dtype=torch.bfloat16), meta(Bsz, L, K, N, dtype=torch.bfloat16)
    A = meta(K, D, N, dtype=torch.float32)
    rest = (grid, default_directions(3, K), True)
    out, carries = T.multidir_scan_fwd(u, delta, A, Bm, Bm, None, None, None, *rest, return_carries=True)
    assert carries is None and T.carries_shape(Bsz, L, D, K, N) == (0,)
    grads = T.multidir_scan_bwd(u, u, delta, A, Bm, Bm, None, None, None, *rest, carries=carries)
    assert [tuple(g.shape) for g in grads[:5]] == [tuple(x.shape) for x in (u, delta, A, Bm, Bm)]
    assert grads[5:] == (None, None, None)
