"""Record a CPU reference fixture from the ORIGINAL SegMamba network.

What it records
---------------
``<out>/segmamba_3d.pt`` (``torch.save`` dict) from ``SegMamba`` of ge-xing/SegMamba at commit
cff35970e0c542ad940b5701267f1ac888298b06 (``model_segmamba/segmamba.py``), reduced configuration
``SegMamba(in_chans=2, out_chans=3, depths=[2,2,2,2], feat_size=[48,8,8,8], hidden_size=16)``
(``feat_size[0]`` must stay 48: the original hard-codes ``UnetOutBlock(in_channels=48)``), run once in
float32 on CPU on a seeded ``randn(1, 2, 128, 16, 16)`` input (total stride 16; the first axis 128 gives
every stage a first-axis size equal to the hard-coded ``nslices`` [64, 32, 16, 8], so the "slice" scan
is a true inter-slice scan):

* ``init_stats``: {state_dict key: [mean, std, min, max]} of the default initialisation (seed 0);
* ``state_dict``: every float tensor perturbed (``p += 0.05 * (|p|.mean() + 1e-2) * randn``, seeded) so no
  two tensors are equal by construction, then rounded to float16-representable values and stored as
  float16 (exact); the forward ran with exactly these values cast to float32;
* ``input``, ``outputs`` (list with the one output), ``encoder_outputs`` (the 4 outputs of ``vit``,
  the MambaEncoder, recorded with a forward hook: the tensors if the file stays below 3 MB, else per output
  a dict {shape, sum, abs_sum, channel_mean (float64 sums/means), tensor (float32, or None when it has more
  than 16384 elements)}), ``param_count``, versions, ``source``, ``init_kwargs``.

``<out>/segmamba_param_counts.json``: parameter counts of the release configuration of ``3_train.py``
(4 -> 4 channels, BraTS 2023) and of the same configuration with 1 -> 3 channels (Hippocampus).

How it runs the original without CUDA
-------------------------------------
The snapshot vendors its own modified ``mamba_ssm`` (``mamba/mamba_ssm``, ``bimamba_type="v3"``), its own
``causal-conv1d`` Python package and its own ``monai/`` copy; all three are put first on ``sys.path``.
Only the compiled extensions (``selective_scan_cuda``, ``causal_conv1d_cuda``) and the modules the
network never uses and that need Triton/transformers (``mamba_ssm.ops.triton.*``,
``mamba_ssm.models.mixer_seq_simple``) are stubbed in ``sys.modules``.  The v3 path only runs through the
fused ``mamba_inner_fn_no_out_proj``; it is replaced in ``mamba_ssm.modules.mamba_simple`` by
``mamba_inner_fn_no_out_proj_cpu`` below, which follows ``MambaInnerFnNoOutProj.forward`` line by line
with the causal conv1d done by ``F.conv1d`` and the scan by the vendored ``selective_scan_ref``.  Before
recording, the script checks the replacement against the vendored ``mamba_inner_ref`` (with the vendored
``causal_conv1d_ref`` and ``selective_scan_ref`` as its kernels and an identity out_proj).

Getting the snapshot
--------------------
    git clone https://github.com/ge-xing/SegMamba .originals/SegMamba
    git -C .originals/SegMamba checkout cff35970e0c542ad940b5701267f1ac888298b06

(``.originals/`` is git-ignored; none of the original code is copied into this repository.)

Run
---
    .venv/bin/python benchmarks/originals/record_segmamba.py --segmamba .originals/SegMamba \
        --out tests/fixtures/originals
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import types

import torch
import torch.nn.functional as F
from einops import rearrange

REPOSITORY = "https://github.com/ge-xing/SegMamba"
COMMIT = "cff35970e0c542ad940b5701267f1ac888298b06"
FILE = "model_segmamba/segmamba.py"
CLASS = "SegMamba"

REDUCED_KWARGS = dict(in_chans=2, out_chans=3, depths=[2, 2, 2, 2], feat_size=[48, 8, 8, 8], hidden_size=16)
INPUT_SHAPE = (1, 2, 128, 16, 16)
# 3_train.py: SegMamba(in_chans=4, out_chans=4, depths=[2,2,2,2], feat_size=[48, 96, 192, 384]);
# hidden_size is left at its default 768.
RELEASE_KWARGS = dict(in_chans=4, out_chans=4, depths=[2, 2, 2, 2], feat_size=[48, 96, 192, 384], hidden_size=768)
HIPPOCAMPUS_KWARGS = dict(RELEASE_KWARGS, in_chans=1, out_chans=3)

ENCODER_OUTPUTS_MAX_BYTES = 2_000_000  # store the encoder outputs in full only if the file stays below this
ENCODER_OUTPUT_SMALL_NUMEL = 16_384  # otherwise: summaries, plus the full tensor for outputs this small


def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__stub__ = True
    sys.modules[name] = mod
    return mod


def _no_cuda(what: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"{what} is a CUDA kernel stub; it must not be reached on the CPU path")

    return fail


def load_original(segmamba_dir: str, cuda_extensions: dict | None = None):
    """Import the original SegMamba module (and its vendored mamba_ssm / monai) with CPU stubs, or with the compiled
    extensions ``cuda_extensions`` ({"selective_scan_cuda": module, "causal_conv1d_cuda": module}) and no CPU patch.

    Returns (segmamba_module, mamba_simple_module, selective_scan_interface_module, causal_conv1d_interface,
    the CPU replacement of mamba_inner_fn_no_out_proj or None with ``cuda_extensions``).
    """
    segmamba_dir = os.path.abspath(segmamba_dir)
    for sub in ("", "mamba", "causal-conv1d"):
        path = os.path.join(segmamba_dir, sub) if sub else segmamba_dir
        if not os.path.isdir(path):
            raise SystemExit(f"not a SegMamba checkout (missing {path})")
    for name in ("mamba_ssm", "monai", "causal_conv1d"):
        if name in sys.modules:
            raise SystemExit(f"{name} was imported before the snapshot's copy could be put first on sys.path")
    # vendored monai (segmamba_dir/monai), vendored mamba_ssm (mamba/), vendored causal_conv1d (causal-conv1d/)
    sys.path[:0] = [segmamba_dir, os.path.join(segmamba_dir, "mamba"), os.path.join(segmamba_dir, "causal-conv1d")]

    # Compiled CUDA extensions imported at module level by selective_scan_interface.py and
    # causal_conv1d_interface.py: the given builds, else stubs never called on the patched CPU path.
    if cuda_extensions is not None:
        sys.modules.update(cuda_extensions)
    else:
        _stub("selective_scan_cuda", fwd=_no_cuda("selective_scan_cuda.fwd"), bwd=_no_cuda("selective_scan_cuda.bwd"))
        _stub(
            "causal_conv1d_cuda",
            causal_conv1d_fwd=_no_cuda("causal_conv1d_cuda.causal_conv1d_fwd"),
            causal_conv1d_bwd=_no_cuda("causal_conv1d_cuda.causal_conv1d_bwd"),
            causal_conv1d_update=_no_cuda("causal_conv1d_cuda.causal_conv1d_update"),
        )
    # Triton kernels used only by step()/fused add-norm (not by SegMamba): make their import fail, which
    # mamba_simple.py catches (sets RMSNorm/layer_norm_fn/rms_norm_fn/selective_state_update to None).
    sys.modules["mamba_ssm.ops.triton.layernorm"] = None
    sys.modules["mamba_ssm.ops.triton.selective_state_update"] = None
    # mamba_ssm/__init__.py imports MambaLMHeadModel, whose module needs `transformers` (not installed,
    # not used by SegMamba).
    _stub("mamba_ssm.models.mixer_seq_simple", MambaLMHeadModel=None)

    import causal_conv1d
    import mamba_ssm
    import monai
    from mamba_ssm.modules import mamba_simple
    from mamba_ssm.ops import selective_scan_interface as ssi
    from causal_conv1d import causal_conv1d_interface as cci

    for mod in (mamba_ssm, monai, causal_conv1d):
        if not os.path.abspath(mod.__file__).startswith(segmamba_dir + os.sep):
            raise SystemExit(f"{mod.__name__} resolved to {mod.__file__}, not the snapshot's copy")

    spec = importlib.util.spec_from_file_location("segmamba_original", os.path.join(segmamba_dir, FILE))
    segmamba = importlib.util.module_from_spec(spec)
    sys.modules["segmamba_original"] = segmamba
    spec.loader.exec_module(segmamba)
    assert segmamba.Mamba is mamba_simple.Mamba
    if cuda_extensions is not None:
        return segmamba, mamba_simple, ssi, cci, None

    def mamba_inner_fn_no_out_proj_cpu(
        xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
        A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
        C_proj_bias=None, delta_softplus=True,
    ):
        """MambaInnerFnNoOutProj.forward of the vendored selective_scan_interface.py, on CPU.

        causal_conv1d_cuda.causal_conv1d_fwd(x, w, b, True) -> F.conv1d(..., padding=w-1, groups=d)[..., :L] + SiLU;
        selective_scan_cuda.fwd(...) -> out_z                 -> vendored selective_scan_ref(..., z=z).
        """
        L = xz.shape[-1]
        delta_rank = delta_proj_weight.shape[1]
        d_state = A.shape[-1] * (1 if not A.is_complex() else 2)
        assert not A.is_complex()  # SegMamba: real A (S4D-real init)
        assert not torch.is_autocast_enabled()
        if xz.stride(-1) != 1:
            xz = xz.contiguous()
        x, z = xz.chunk(2, dim=1)
        conv1d_bias = conv1d_bias.contiguous() if conv1d_bias is not None else None
        width = conv1d_weight.shape[-1]  # (d, 1, w)
        conv1d_out = F.silu(
            F.conv1d(x, conv1d_weight, conv1d_bias, padding=width - 1, groups=x.shape[1])[..., :L]
        )
        x_dbl = F.linear(rearrange(conv1d_out, "b d l -> (b l) d"), x_proj_weight)  # (bl d)
        delta = rearrange(delta_proj_weight @ x_dbl[:, :delta_rank].t(), "d (b l) -> b d l", l=L)
        if B is None:  # variable B
            B = x_dbl[:, delta_rank:delta_rank + d_state]  # (bl dstate)
            if B_proj_bias is not None:
                B = B + B_proj_bias.to(dtype=B.dtype)
            B = rearrange(B, "(b l) dstate -> b 1 dstate l", l=L).contiguous()
        elif B.stride(-1) != 1:
            B = B.contiguous()
        if C is None:  # variable C
            C = x_dbl[:, -d_state:]  # (bl dstate)
            if C_proj_bias is not None:
                C = C + C_proj_bias.to(dtype=C.dtype)
            C = rearrange(C, "(b l) dstate -> b 1 dstate l", l=L).contiguous()
        elif C.stride(-1) != 1:
            C = C.contiguous()
        if D is not None:
            D = D.contiguous()
        # selective_scan_cuda.fwd(conv1d_out, delta, A, B, C, D, z, delta_bias, delta_softplus) -> out_z
        return ssi.selective_scan_ref(conv1d_out, delta, A, B, C, D, z=z, delta_bias=delta_bias,
                                      delta_softplus=delta_softplus)

    mamba_simple.mamba_inner_fn_no_out_proj = mamba_inner_fn_no_out_proj_cpu
    return segmamba, mamba_simple, ssi, cci, mamba_inner_fn_no_out_proj_cpu


def check_cpu_inner_fn(ssi, cci, fn) -> float:
    """Compare the CPU replacement with the vendored mamba_inner_ref (identity out_proj), which
    reaches the scan through a different layout of B/C ("b dstate l", 3-D) and the vendored
    causal_conv1d_ref.  Returns the max abs difference."""
    g = torch.Generator().manual_seed(123)
    b, d, L, n, r, w = 2, 12, 37, 5, 3, 4
    xz = torch.randn(b, 2 * d, L, generator=g)
    conv_w = torch.randn(d, 1, w, generator=g) * 0.5
    conv_b = torch.randn(d, generator=g) * 0.1
    x_proj_w = torch.randn(r + 2 * n, d, generator=g) * 0.3
    dt_w = torch.randn(d, r, generator=g) * 0.5
    A = -torch.exp(torch.randn(d, n, generator=g) * 0.5)
    D = torch.randn(d, generator=g)
    dt_b = torch.randn(d, generator=g) - 2.0
    saved = ssi.causal_conv1d_fn, ssi.selective_scan_fn
    try:
        ssi.causal_conv1d_fn = cci.causal_conv1d_ref
        ssi.selective_scan_fn = ssi.selective_scan_ref
        ref = ssi.mamba_inner_ref(xz, conv_w, conv_b, x_proj_w, dt_w, torch.eye(d), None, A, None, None, D,
                                  delta_bias=dt_b, delta_softplus=True)  # (b l d)
    finally:
        ssi.causal_conv1d_fn, ssi.selective_scan_fn = saved
    got = fn(xz, conv_w, conv_b, x_proj_w, dt_w, A, None, None, D, delta_bias=dt_b, delta_softplus=True)
    diff = (got.transpose(1, 2) - ref).abs().max().item()
    if not diff <= 1e-5 * max(1.0, ref.abs().max().item()):
        raise SystemExit(f"CPU mamba_inner_fn_no_out_proj disagrees with the vendored mamba_inner_ref: {diff}")
    return diff


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tensor_stats(t: torch.Tensor) -> list[float]:
    t = t.detach().double()
    std = t.std().item() if t.numel() > 1 else 0.0
    return [t.mean().item(), std, t.min().item(), t.max().item()]


def encoder_summary(t: torch.Tensor) -> dict:
    t64 = t.double()
    return {
        "shape": list(t.shape),
        "sum": t64.sum().item(),
        "abs_sum": t64.abs().sum().item(),
        "channel_mean": t64.mean(dim=[d for d in range(t.dim()) if d != 1]).tolist(),
        "tensor": t.clone() if t.numel() <= ENCODER_OUTPUT_SMALL_NUMEL else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segmamba", required=True, help="SegMamba checkout (commit %s)" % COMMIT[:12])
    ap.add_argument("--out", default="tests/fixtures/originals")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    segmamba, mamba_simple, ssi, cci, cpu_fn = load_original(args.segmamba)
    diff = check_cpu_inner_fn(ssi, cci, cpu_fn)
    print(f"CPU mamba_inner_fn_no_out_proj vs vendored mamba_inner_ref: max |diff| = {diff:.3g}")
    import monai

    os.makedirs(args.out, exist_ok=True)

    # ---- parameter counts of the release configurations (construction only)
    counts = {}
    for key, kw in (("segmamba_3d/brats2023", RELEASE_KWARGS), ("segmamba_3d/hippocampus", HIPPOCAMPUS_KWARGS)):
        torch.manual_seed(0)
        m = segmamba.SegMamba(**kw)
        counts[key] = {"network": "segmamba_3d", "init_kwargs": kw, "params": param_count(m)}
        print(f"{key}: {counts[key]['params']:,} parameters")
        del m
    with open(os.path.join(args.out, "segmamba_param_counts.json"), "w") as f:
        json.dump(counts, f, indent=2)
        f.write("\n")

    # ---- reduced network, default init (seed 0)
    torch.manual_seed(0)
    model = segmamba.SegMamba(**REDUCED_KWARGS).float()
    assert all(m.use_fast_path and m.bimamba_type == "v3" for m in model.modules() if isinstance(m, mamba_simple.Mamba))
    sd = model.state_dict()
    init_stats = {k: tensor_stats(v) for k, v in sd.items() if v.is_floating_point()}

    # ---- perturb every float tensor, round to float16-representable values
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, p in sd.items():
            if not p.is_floating_point():
                continue
            p += 0.05 * (p.abs().mean() + 1e-2) * torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.copy_(p.half().float())
    flat = [v.flatten() for v in sd.values() if v.is_floating_point()]
    for i in range(len(flat)):  # no two tensors equal by construction
        for j in range(i + 1, len(flat)):
            assert flat[i].shape != flat[j].shape or not torch.equal(flat[i], flat[j])

    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(2))

    enc = {}
    hook = model.vit.register_forward_hook(lambda mod, inp, out: enc.__setitem__("out", out))
    model.eval()
    with torch.no_grad():
        y = model(x)
    hook.remove()
    enc_out = [t.detach().clone() for t in enc["out"]]
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in enc_out)
    print("output", tuple(y.shape), "encoder outputs", [tuple(t.shape) for t in enc_out])

    record = {
        "network": "segmamba_3d",
        "source": {"repository": REPOSITORY, "commit": COMMIT, "file": FILE, "class": CLASS},
        "init_kwargs": REDUCED_KWARGS,
        "input": x,
        "outputs": [y],
        "encoder_outputs": enc_out,
        "state_dict": {k: (v.half() if v.is_floating_point() else v).clone() for k, v in sd.items()},
        "param_count": param_count(model),
        "init_stats": init_stats,
        "torch_version": str(torch.__version__),
        "monai_version": (
            f"vendored (SegMamba snapshot's monai/, __version__ {monai.__version__!r}, "
            f"revision {getattr(monai, '__revision_id__', None)}); its UnetrBasicBlock/UnetrUpBlock/"
            f"UnetOutBlock/UnetResBlock sources are identical to pip MONAI 1.6.1"
        ),
        "notes": (
            "float32 CPU forward in eval mode under no_grad; mamba_inner_fn_no_out_proj replaced by a CPU "
            "transcription (F.conv1d causal conv + SiLU, vendored selective_scan_ref); state_dict values are "
            "exactly the float16 values used (cast to float32) in the forward; input seed 2, init seed 0, "
            "perturbation seed 1"
        ),
    }
    path = os.path.join(args.out, "segmamba_3d.pt")
    torch.save(record, path)
    if os.path.getsize(path) > ENCODER_OUTPUTS_MAX_BYTES:
        # too big with the full encoder outputs: keep summaries, and the full tensor only for the small ones
        record["encoder_outputs"] = [encoder_summary(t) for t in enc_out]
        torch.save(record, path)
    print(f"wrote {path} ({os.path.getsize(path):,} bytes), param_count {record['param_count']:,}")


if __name__ == "__main__":
    main()
