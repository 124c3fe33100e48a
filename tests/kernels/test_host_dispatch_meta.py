"""The Triton backend's host side (plan, buffers, carries, output shapes and dtypes) on ``meta`` tensors with the
launches stubbed out: every kernel family and output mode the GPU takes, without a GPU or the interpreter."""
import pytest
import torch

T = pytest.importorskip("nnunet_mamba.kernels.triton")
from nnunet_mamba.kernels import scan_options  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402
from nnunet_mamba.kernels.triton import chunked, param_grads, sequential  # noqa: E402


class _NoLaunch:
    def __getitem__(self, grid):
        assert all(isinstance(g, int) and g >= 1 for g in grid), grid
        return lambda *args, **kwargs: None


@pytest.fixture
def stubbed(monkeypatch):
    for module in (chunked, sequential, param_grads):
        monkeypatch.setattr(module, "launcher", lambda fn: _NoLaunch())


def meta(*shape, dtype):
    return torch.empty(shape, device="meta", dtype=dtype)


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("Bsz,D,grid,K,dtype", [
    (2, 320, (4, 4, 4), 2, torch.bfloat16),  # single-chunk map: chunked kernels
    (2, 640, (8, 8, 8), 2, torch.bfloat16),  # short map: sequential kernels, 16-step chunks
    (2, 512, (16, 16, 16), 3, torch.bfloat16),  # sequential kernels, 64-step chunks, saved carries
    (1, 96, (64, 64, 64), 1, torch.float32),
    (58, 256, (5, 7, 5), 6, torch.float16),  # large batch, short map: sequential
    (2, 40, (37, 29), 4, torch.float32),  # 2D grid
    (1, 24, (4099,), 2, torch.bfloat16),  # 1D, ragged last chunk
])
def test_outputs_and_gradients_have_the_inputs_shapes_and_dtypes(stubbed, Bsz, D, grid, K, dtype, deterministic):
    N = 16
    L = 1
    for s in grid:
        L *= s
    u, z, dout = meta(Bsz, L, D, dtype=dtype), meta(Bsz, L, D, dtype=dtype), meta(Bsz, L, D, dtype=dtype)
    delta, Bm, Cm = meta(Bsz, L, K, D, dtype=dtype), meta(Bsz, L, K, N, dtype=dtype), meta(Bsz, L, K, N, dtype=dtype)
    A, Dskip, bias = (meta(K, D, N, dtype=torch.float32), meta(K, D, dtype=torch.float32),
                      meta(K, D, dtype=torch.float32))
    rest = (grid, default_directions(len(grid), K), True)
    with scan_options(deterministic=deterministic):
        out, carries = T.multidir_scan_fwd(u, delta, A, Bm, Cm, Dskip, bias, z, *rest, return_carries=True)
        assert out.shape == u.shape and out.dtype == dtype
        expected = T.carries_shape(Bsz, L, D, K, N)
        assert (carries is None and expected == (0,)) or tuple(carries.shape) == expected
        for given in (carries, None):  # from the forward's carries, or recomputing them
            grads = T.multidir_scan_bwd(dout, u, delta, A, Bm, Cm, Dskip, bias, z, *rest, carries=given)
            for g, x in zip(grads, (u, delta, A, Bm, Cm, Dskip, bias, z)):
                assert g.shape == x.shape and g.dtype == x.dtype


def test_carries_of_another_problem_are_refused(stubbed):
    Bsz, D, grid, K, N = 2, 64, (8, 8, 8), 2, 16
    L = 512
    u = meta(Bsz, L, D, dtype=torch.float32)
    delta, Bm, A = meta(Bsz, L, K, D, dtype=torch.float32), meta(Bsz, L, K, N, dtype=torch.float32), \
        meta(K, D, N, dtype=torch.float32)
    rest = (grid, default_directions(3, K), True)
    wrong = meta(Bsz, 1, K, 3, N, D, dtype=torch.float32)
    with pytest.raises(ValueError, match="carries of shape"):
        T.multidir_scan_bwd(u, u, delta, A, Bm, Bm, None, None, None, *rest, carries=wrong)


