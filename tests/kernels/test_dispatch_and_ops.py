"""Backend selection, the torch.library custom op contract, and torch.compile without graph breaks."""
import pytest
import torch

from nnunet_mamba.kernels import ENV_VAR, default_directions, explain_backend, multidir_selective_scan
from nnunet_mamba.kernels.directions import decode_directions, encode_directions
from nnunet_mamba.kernels.ops import multidir_scan_op
from nnunet_mamba.layers import MultiDirMamba

from test_reference import make_inputs, rel


def test_automatic_backend_on_cpu_is_the_reference(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    name, why = explain_backend("cpu")
    assert name == "reference" and "automatic" in why


def test_environment_variable_and_argument_override(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "reference")
    assert explain_backend("cpu") == ("reference", f"requested by ${ENV_VAR}")
    monkeypatch.setenv(ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="unknown scan backend 'nonsense'"):
        explain_backend("cpu")
    assert explain_backend("cpu", "reference")[0] == "reference"  # the argument wins
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
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


def test_sequence_length_and_parallelism_pick_the_kernel_family(monkeypatch):
    """Sequential kernels beyond 1024 steps, and on shorter maps when batch x channels give >= 4096
    sequential programs; chunked ones otherwise. NNUNET_MAMBA_SCAN_SEQ_MIN_L and
    NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS move the two lines, NNUNET_MAMBA_SCAN_SEQ(_BWD)=0 turn them off."""
    T = pytest.importorskip("nnunet_mamba.kernels.triton_scan")
    for var in ("NNUNET_MAMBA_SCAN_SEQ_MIN_L", "NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS", "NNUNET_MAMBA_SCAN_SEQ",
                "NNUNET_MAMBA_SCAN_SEQ_BWD"):
        monkeypatch.delenv(var, raising=False)
    for bwd in (False, True):
        assert T._config(1400, 128, bwd, 58)["seq"]  # long map
        cfg = T._config(175, 256, bwd, 58)  # Hippocampus bottleneck: 8 x 58 x 11 = 5104 programs
        assert cfg["seq"] and cfg["BLOCK_T"] == 16
        assert not T._config(512, 320, bwd, 2).get("seq")  # BraTS-like 8^3: 640 programs
        assert not T._config(512, 640, bwd, 2).get("seq")  # the 8^3 shape: 1280
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS", "6000")
    assert not T._config(175, 256, True, 58).get("seq")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_MIN_L", "128")
    assert T._config(175, 256, True, 58)["seq"] and T._config(175, 256, True, 2)["seq"]
    assert not T._config(100, 256, True, 58).get("seq")
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SEQ_MIN_L")
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_BWD", "0")
    assert T._config(175, 256, False, 58)["seq"] and not T._config(175, 256, True, 58).get("seq")
    assert T._config(175, 256, True, 58)["BLOCK_T"] == 64  # the short-map chunked tiles
    for var in ("NNUNET_MAMBA_SCAN_SEQ_MIN_L", "NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS"):
        monkeypatch.setenv(var, "many")
        with pytest.raises(ValueError, match=var):
            T._config(175, 256, False, 58)
        monkeypatch.delenv(var)


def test_reuse_steps_is_opt_in(monkeypatch):
    """The adjoint walk's step reuse (untimed on a GPU) stays off unless the environment or the config asks."""
    T = pytest.importorskip("nnunet_mamba.kernels.triton_scan")
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_REUSE_STEPS", raising=False)
    assert not T._reuse_steps({}) and T._reuse_steps({"reuse_steps": True})
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_REUSE_STEPS", "1")
    assert T._reuse_steps({}) and not T._reuse_steps({"reuse_steps": False})
