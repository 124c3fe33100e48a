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
    """Sequential kernels beyond one chunk (64 steps), and on single-chunk maps when batch x channels give
    >= 4096 sequential programs; chunked ones otherwise. NNUNET_MAMBA_SCAN_SEQ_MIN_L and
    NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS move the two lines, NNUNET_MAMBA_SCAN_SEQ(_BWD)=0 turn them off."""
    T = pytest.importorskip("nnunet_mamba.kernels.triton_scan")
    for var in ("NNUNET_MAMBA_SCAN_SEQ_MIN_L", "NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS", "NNUNET_MAMBA_SCAN_SEQ",
                "NNUNET_MAMBA_SCAN_SEQ_BWD", "NNUNET_MAMBA_SCAN_SEQ_PROGRAMS", "NNUNET_MAMBA_SCAN_SEQ_MAX_CHUNKS",
                "NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS_BWD"):
        monkeypatch.delenv(var, raising=False)
    for bwd in (False, True):
        assert T._config(1400, 128, bwd, 58)["seq"]  # long map
        cfg = T._config(175, 256, bwd, 58)  # Hippocampus bottleneck: 8 x 58 x 11 = 5104 programs
        assert cfg["seq"] and cfg["BLOCK_T"] == 16
        assert T._config(1400, 128, bwd, 58)["BLOCK_T"] == 64  # Hippocampus stage 2: 4 x 58 x 22 = 5104 programs
        # long maps: at most 64 chunks, even with fewer programs (16^3: 2048 programs of 64 steps)
        assert T._config(4096, 512, bwd, 2)["BLOCK_T"] == 64
        assert T._config(32768, 256, bwd, 2)["BLOCK_T"] == 256
        for D in (64, 320, 640):  # 8^3 at any width: sequential, 16-step chunks
            cfg = T._config(512, D, bwd, 2)
            assert cfg["seq"] and cfg["BLOCK_T"] == 16
        assert T._config(65, 320, bwd, 2)["seq"]
        assert not T._config(64, 320, bwd, 2).get("seq")  # BraTS-like 4^3: one chunk, 80 programs
        assert T._config(64, 16384, bwd, 2)["seq"]  # one chunk, but 512 x 2 x 4 = 4096 programs
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS_BWD", "1")  # the backward alone: 4^3 sequential
    assert T._config(64, 320, True, 2)["seq"] and not T._config(64, 320, False, 2).get("seq")
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS_BWD")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_MIN_L", "1024")  # the earlier default
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS", "6000")
    assert not T._config(175, 256, True, 58).get("seq") and not T._config(512, 640, True, 2).get("seq")
    assert T._config(1025, 32, True, 1)["seq"]
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_MIN_L", "128")
    assert T._config(175, 256, True, 58)["seq"] and T._config(175, 256, True, 2)["seq"]
    assert not T._config(100, 256, True, 58).get("seq")
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SEQ_MIN_L")
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_BWD", "0")
    assert T._config(175, 256, False, 58)["seq"] and not T._config(175, 256, True, 58).get("seq")
    assert T._config(175, 256, True, 58)["BLOCK_T"] == 64  # the short-map chunked tiles
    assert T._config(4096, 256, True, 2)["BLOCK_T"] == 16  # the long-map ones
    for var in ("NNUNET_MAMBA_SCAN_SEQ_MIN_L", "NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS"):
        monkeypatch.setenv(var, "many")
        with pytest.raises(ValueError, match=var):
            T._config(64, 256, False, 2)
        monkeypatch.delenv(var)


def test_sequential_backward_switches(monkeypatch):
    """Defaults of the sequential kernels (step reuse on, 2-step sub-chunks, no lane split, no register cap,
    dB/dC by atomics), each overridable by the environment and by the config."""
    T = pytest.importorskip("nnunet_mamba.kernels.triton_scan")
    for var in ("REUSE_STEPS", "SUBCHUNK", "SPLIT_BWD", "SPLIT_FWD", "MAXNREG_BWD", "BC_SLABS", "DETERMINISTIC"):
        monkeypatch.delenv("NNUNET_MAMBA_SCAN_" + var, raising=False)
    cfg = {"BLOCK_D": 32}
    assert T._reuse_steps({}) and not T._reuse_steps({"reuse_steps": False})
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_REUSE_STEPS", "0")
    assert not T._reuse_steps({}) and T._reuse_steps({"reuse_steps": True})
    assert T._sub_chunk({}) == 2 and T._sub_chunk({"S": 4}) == 4
    # lanes per channel: 1 unless asked; falls back to 1 where N or the lanes do not divide, or deterministic
    assert T._lane_split(cfg, 16, True) == 1
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SPLIT_BWD", "2")
    assert T._lane_split(cfg, 16, True) == 2 and T._lane_split(cfg, 16, False) == 1
    assert T._lane_split(cfg, 3, True) == 1 and T._lane_split({"BLOCK_D": 1}, 16, True) == 1
    assert T._lane_split(dict(cfg, split_bwd=4), 16, True) == 4
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_DETERMINISTIC", "1")
    assert T._lane_split(cfg, 16, True) == 1
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_DETERMINISTIC")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SPLIT_BWD", "3")
    with pytest.raises(ValueError, match="SPLIT_BWD"):
        T._lane_split(cfg, 16, True)
    # register cap: a launch option only when asked
    assert T._register_cap({}, True) == {}
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_MAXNREG_BWD", "168")
    assert T._register_cap({}, True) == {"maxnreg": 168} and T._register_cap({}, False) == {}
    # dB/dC slabs: opt-in (atomics by default), by the environment or the config
    assert not T._bc_slabs({}) and T._bc_slabs({"bc_slabs": True})
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_BC_SLABS", "1")
    assert T._bc_slabs({}) and not T._bc_slabs({"bc_slabs": False})


def test_prefetch_and_walk_unroll_switches(monkeypatch):
    """Cache prefetches (mode and distances) and the walks' unroll: defaults, environment, config, and the
    errors for values the kernels cannot take."""
    T = pytest.importorskip("nnunet_mamba.kernels.triton_scan")
    for var in ("PREFETCH", "PREFETCH_DIST", "PREFETCH_DIST_BWD", "WALK_UNROLL", "SUBCHUNK"):
        monkeypatch.delenv("NNUNET_MAMBA_SCAN_" + var, raising=False)
    monkeypatch.setattr(T, "triton_interpreting", lambda: False)
    assert T._prefetch({}) == {"PF": 1, "PFD": 1} and T._prefetch({}, bwd_walk2=True) == {"PF": 1, "PFD": 1}
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_PREFETCH", "2")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_PREFETCH_DIST_BWD", "3")
    assert T._prefetch({}) == {"PF": 2, "PFD": 1} and T._prefetch({}, bwd_walk2=True) == {"PF": 2, "PFD": 3}
    assert T._prefetch({"prefetch": 0})["PF"] == 0
    assert T._prefetch({"prefetch": 1, "prefetch_dist": 2}) == {"PF": 1, "PFD": 2}
    monkeypatch.setattr(T, "triton_interpreting", lambda: True)
    assert T._prefetch({})["PF"] == 0  # no PTX in the interpreter
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_PREFETCH", "3")
    with pytest.raises(ValueError, match="PREFETCH"):
        T._prefetch({})
    cfg = {"BLOCK_T": 128}
    assert T._walk_unroll(cfg, 2) == 2 and T._walk_unroll(dict(cfg, SF=8), 2) == 8
    assert T._walk_unroll({"BLOCK_T": 4, "SF": 8}, 2) == 4  # at most the chunk
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_WALK_UNROLL", "4")
    assert T._walk_unroll(cfg, 2) == 4
    for bad in ("3", "1"):
        monkeypatch.setenv("NNUNET_MAMBA_SCAN_WALK_UNROLL", bad)
        with pytest.raises(ValueError, match="WALK_UNROLL"):
            T._walk_unroll(cfg, 2)
    with pytest.raises(ValueError, match="multiple of the walks' unroll"):
        T._walk_unroll({"BLOCK_T": 12, "SF": 8}, 2)


def test_saved_carries_switches_and_shape(monkeypatch):
    """The forward hands its carries to the backward by default, only where both passes run the sequential
    kernels with one chunk length over more than one chunk; the switches turn it (and dC in the summary) off."""
    T = pytest.importorskip("nnunet_mamba.kernels.triton_scan")
    for var in ("SAVE_CARRIES", "DC_IN_SUMMARY", "SCR", "SEQ_BWD", "SEQ_PROGRAMS", "SEQ_MAX_CHUNKS"):
        monkeypatch.delenv("NNUNET_MAMBA_SCAN_" + var, raising=False)
    assert T._save_carries({}) and T._dc_in_summary({})
    L, D, Bsz, K, N = 32 ** 3, 256, 2, 3, 16
    nC = L // T._config(L, D, True, Bsz)["BLOCK_T"]
    assert T.carries_shape(Bsz, L, D, K, N) == (Bsz, 1, K, nC, N, D)
    assert T.carries_shape(Bsz, 8 ** 3, 64, K, N) == (Bsz, 1, K, 8 ** 3 // 16, N, 64)  # 8^3: 16-step chunks
    assert T.carries_shape(Bsz, 4 ** 3, 64, K, N) == (0,)  # single-chunk map: chunked kernels
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ_BWD", "0")
    assert T.carries_shape(Bsz, L, D, K, N) == (0,)  # chunked backward
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SEQ_BWD")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SCR", "0")
    assert T.carries_shape(Bsz, L, D, K, N) == (0,)  # the backward's own walk 1
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SCR")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SAVE_CARRIES", "0")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_DC_IN_SUMMARY", "0")
    assert T.carries_shape(Bsz, L, D, K, N) == (0,) and not T._dc_in_summary({})
    assert T._save_carries({"save_carries": True})


def test_bc_buffers_and_finish_reduce_slabs(monkeypatch):
    """Slabs are summed over channel blocks; atomic buffers and single-block outputs only change dtype."""
    T = pytest.importorskip("nnunet_mamba.kernels.triton_scan")
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_PARAM_GRADS_MAX_ROWS", "0")  # torch's sums: no Triton launch on a CPU
    Bm = torch.zeros(2, 5, 3, 4, dtype=torch.bfloat16)  # (B, L, K, N)
    Cm = torch.zeros(2, 5, 3, 4, dtype=torch.float32)
    dA_p = torch.ones(2, 1, 3, 4, 6)  # (B, nC, K, N, D)
    dB, dC = T._bc_buffers(3, True, Bm, Cm, 5, 3)
    assert dB.shape == (3, 2, 5, 3, 4) and dB.dtype == torch.float32
    dB.copy_(torch.arange(3.0).view(3, 1, 1, 1, 1).expand_as(dB))
    dC.fill_(0.5)
    dA, dD, dbias, oB, oC = T._finish_grads(dA_p, None, None, dB, dC, 3, True, Bm, Cm, torch.float32, None, None)
    assert oB.dtype == torch.bfloat16 and oC.dtype == torch.float32 and oB.shape == Bm.shape
    assert torch.all(oB == 3.0) and torch.all(oC == 1.5)
    assert dA.shape == (3, 6, 4) and torch.all(dA == 2.0) and dD is None and dbias is None
    aB, aC = T._bc_buffers(3, False, Bm, Cm, 5, 3)
    assert aB.shape == Bm.shape and aB.dtype == torch.float32 and not aB.any()
    assert aB.untyped_storage().data_ptr() != aC.untyped_storage().data_ptr()  # fp32 dC is an output itself
    both = Cm.bfloat16()  # both converted afterwards: one zero fill for the pair
    pB, pC = T._bc_buffers(3, False, Bm, both, 5, 3)
    assert pB.dtype == pC.dtype == torch.float32 and not pB.any() and not pC.any()
    assert pC.data_ptr() == pB.data_ptr() + pB.numel() * 4
    pB.fill_(1.0)
    pC.fill_(-2.0)
    *_, oB, oC = T._finish_grads(dA_p, None, None, pB, pC, 3, False, Bm, both, torch.float32, None, None)
    assert oB.dtype == oC.dtype == torch.bfloat16 and torch.all(oB == 1.0) and torch.all(oC == -2.0)
    assert oB.untyped_storage().data_ptr() != oC.untyped_storage().data_ptr()
    one_B, one_C = T._bc_buffers(1, True, Bm, Cm, 5, 3)
    assert one_B.dtype == torch.bfloat16 and one_C.dtype == torch.float32 and one_B.shape == Bm.shape
