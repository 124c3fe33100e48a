"""Backend selection, the torch.library custom op contract, and torch.compile without graph breaks."""
import pytest
import torch

from nnunet_mamba.kernels import default_directions, explain_backend, multidir_selective_scan, scan_options
from nnunet_mamba.kernels.directions import decode_directions, encode_directions
from nnunet_mamba.kernels.ops import multidir_scan_op
from nnunet_mamba.layers import MultiDirMamba

from test_reference import make_inputs, rel


def test_automatic_backend_on_cpu_is_the_reference():
    name, why = explain_backend("cpu")
    assert name == "reference" and "automatic" in why


def test_option_and_argument_override():
    with scan_options(backend="reference"):
        assert explain_backend("cpu") == ("reference", "requested by scan_options(backend=...)")
    with scan_options(backend="nonsense"):
        with pytest.raises(ValueError, match="unknown scan backend 'nonsense'"):
            explain_backend("cpu")
        assert explain_backend("cpu", "reference")[0] == "reference"  # the argument wins
    with pytest.raises(RuntimeError, match="Triton needs CUDA tensors, or TRITON_INTERPRET=1"):
        explain_backend("cpu", "triton")
    with pytest.raises(RuntimeError, match="(not installed|needs CUDA)"):
        explain_backend("cpu", "mamba_ssm")


def test_direction_codes_round_trip():
    for ndim, k in ((1, 2), (2, 4), (3, 6)):
        dirs = default_directions(ndim, k)
        assert decode_directions(encode_directions(dirs)) == dirs


def test_custom_op_passes_torch_opcheck():
    args = make_inputs(2, 4, 3, (3, 5), 2, dtype=torch.float32, skip=True)
    u, delta, A, B, C, D, bias, z = args
    code = encode_directions(default_directions(2, 2))
    for t in (u, delta, B, C, z):
        t.requires_grad_()
    torch.library.opcheck(multidir_scan_op, (u, delta, A, B, C, D, bias, z, [3, 5], code, True, "reference"))
    torch.library.opcheck(multidir_scan_op, (u, delta, A, B, C, None, None, None, [3, 5], code, False, "reference"))


def test_public_api_validates_shapes():
    u, delta, A, B, C, D, bias, z = make_inputs(1, 4, 3, (3, 5), 2, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"grid \[3, 4\] has 12 voxels, but u has L=15"):
        multidir_selective_scan(u, delta, A, B, C, grid=(3, 4), directions=default_directions(2, 2))
    with pytest.raises(ValueError, match="delta has shape"):
        multidir_selective_scan(u, delta[:, :, :1], A, B, C, grid=(3, 5), directions=default_directions(2, 2))


def test_torch_compile_traces_the_mixer_without_graph_breaks():
    torch.manual_seed(0)
    m = MultiDirMamba(6, ndim=3, directions=4)
    torch.nn.init.normal_(m.out_proj.weight, std=0.1)
    x = torch.randn(2, 6, 3, 4, 5, requires_grad=True)
    eager = m(x)
    g_eager = torch.autograd.grad(eager.square().sum(), [x, m.ssm.A_log])
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    g = torch.autograd.grad(out.square().sum(), [x, m.ssm.A_log])
    assert rel(out, eager) < 1e-6
    assert all(rel(a, b) < 1e-5 for a, b in zip(g, g_eager))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_backend_resolution_does_not_break_a_compiled_graph(device):
    from nnunet_mamba.kernels import resolve_backend

    def f(x):
        return x + len(resolve_backend(torch.device(device)))

    torch._dynamo.reset()
    out = torch.compile(f, backend="eager", fullgraph=True)(torch.zeros(2))
    assert torch.equal(out, torch.full((2,), float(len(resolve_backend(torch.device(device))))))
