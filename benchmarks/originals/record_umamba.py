"""Record reference fixtures from the ORIGINAL U-Mamba networks (run once, on CPU).

What it records
---------------
For each of UMambaBot / UMambaEnc, 2D and 3D, as published in bowang-lab/U-Mamba at commit
28459e33ca03769800dd35e23c6e62491d1925b5 (umamba/nnunetv2/nets/UMamba{Bot,Enc}_{2d,3d}.py),
one ``torch.save`` dict ``<out>/<network>.pt`` (network = umamba_bot_3d, umamba_enc_3d,
umamba_bot_2d, umamba_enc_2d) with a reduced configuration:

* ``init_stats``: {state_dict key: [mean, std, min, max]} of the freshly built model
  (``torch.manual_seed(0)``, then ``model.apply(InitWeights_He(1e-2))`` as the originals'
  ``get_*_from_plans`` do). ``std`` is the population std (correction=0).
* then every floating-point parameter/buffer is perturbed,
  ``p += 0.05 * (p.abs().mean() + 1e-2) * randn_like(p)`` (seeded generator, state_dict order),
  so that no two tensors are equal by construction (Mamba's D=1, norm weights 1 / biases 0, ...),
  and rounded to float16-representable values. ``state_dict`` stores those float16 values (exact;
  cast back to float32 to load); integer buffers as they are.
  The decoder holds a reference to the encoder, so the state dict lists every encoder tensor twice
  ("encoder.*" and "decoder.encoder.*"); both keys are stored, as one shared tensor.
* Inputs: 3D (2, 2, 12, 16, 16); 2D (2, 2, 32, 16) (2D Enc ``input_size`` [32, 16]). A 2D size must be
  divisible by 16 for 5 stages: with 24 the strided convs give 3 -> 2 while the nearest upsampling
  gives 2 -> 4, and the original decoder's torch.cat fails.
* ``input`` (float32 randn) and ``outputs``: ``model.eval()`` forward under ``torch.no_grad()``
  in float32, a list of tensors (deep supervision, highest resolution first).
* ``network``, ``source`` {repository, commit, file, class}, ``mamba_ssm`` {repository, commit,
  version}, ``init_kwargs`` (JSON-able; classes as dotted names such as "torch.nn.Conv3d"),
  ``param_count``, ``do_channel_token`` (Enc: the encoder's per-stage flags; Bot: None),
  ``torch_version``, ``dna_version`` (dynamic_network_architectures).

It also writes ``<out>/umamba_param_counts.json``: parameter counts of the original classes at full-size
configurations (Hippocampus and BraTS-like plans), {"<network>/<plan>": {"network", "init_kwargs", "params"}}.

How Mamba runs on CPU
---------------------
The networks do ``from mamba_ssm import Mamba``. ``mamba_ssm`` is taken from a checkout of
state-spaces/mamba at commit e9594ce1c732d97440f0332fdc43170a2294dbfa (version 2.3.2.post1) WITHOUT
its CUDA/triton extensions: ``mamba_ssm``, ``mamba_ssm.ops`` and ``mamba_ssm.ops.triton`` are
replaced by empty package objects (so their ``__init__`` files, which import Mamba2/Mamba3 and the
triton kernels, never run); ``mamba_ssm.ops.triton.layer_norm`` and
``mamba_ssm.ops.triton.selective_state_update`` are stub modules (the first only provides
``_layer_norm_fwd``, which raises if called; the optional imports of RMSNorm/layer_norm_fn/
rms_norm_fn/selective_state_update then fall back to None as upstream intends); ``causal_conv1d``,
``causal_conv1d_cuda`` and ``selective_scan_cuda`` are blocked (``sys.modules[name] = None``, i.e.
ImportError). Only ``mamba_ssm.ops.selective_scan_interface`` and
``mamba_ssm.modules.mamba_simple`` are imported from the checkout. The slow path is forced:
``Mamba(use_fast_path=False)`` by default (checked on every instance), ``mamba_simple.selective_scan_fn
= selective_scan_ref``, ``mamba_simple.causal_conv1d_fn = None`` and ``mamba_inner_fn`` raises. The
math is therefore mamba-ssm's own pure-PyTorch reference (conv1d + ``selective_scan_ref``).

The nnunetv2 2.8.1 / dynamic_network_architectures modules the originals import all exist, so no
nnU-Net stub is needed. The originals' print() calls are silenced while building.

Getting the snapshots
---------------------
    git clone https://github.com/bowang-lab/U-Mamba && git -C U-Mamba checkout 28459e33ca03769800dd35e23c6e62491d1925b5
    git clone https://github.com/state-spaces/mamba && git -C mamba checkout e9594ce1c732d97440f0332fdc43170a2294dbfa

Run (from the repository root, in an environment with torch, nnunetv2, dynamic_network_architectures, einops):
    python benchmarks/originals/record_umamba.py --umamba .originals/U-Mamba --mamba .originals/mamba \
        --out tests/fixtures/originals
"""
import argparse
import contextlib
import copy
import importlib.util
import io
import json
import re
import sys
import types
import warnings
from pathlib import Path

import torch
from torch import nn

UMAMBA_REPO = "https://github.com/bowang-lab/U-Mamba"
UMAMBA_COMMIT = "28459e33ca03769800dd35e23c6e62491d1925b5"
MAMBA_REPO = "https://github.com/state-spaces/mamba"
MAMBA_COMMIT = "e9594ce1c732d97440f0332fdc43170a2294dbfa"
NETS_DIR = "umamba/nnunetv2/nets"


# ----------------------------------------------------------------------------------------------
# mamba_ssm without CUDA
# ----------------------------------------------------------------------------------------------
def _package(name, path):
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]
    mod.__package__ = name
    sys.modules[name] = mod
    return mod


def install_cpu_mamba_ssm(mamba_dir: Path):
    pkg_dir = mamba_dir / "mamba_ssm"
    if not (pkg_dir / "modules" / "mamba_simple.py").is_file():
        raise SystemExit(f"{mamba_dir} is not a state-spaces/mamba checkout (no mamba_ssm/modules/mamba_simple.py)")
    for name in list(sys.modules):
        if name == "mamba_ssm" or name.startswith("mamba_ssm."):
            del sys.modules[name]
    # CUDA-only extensions: make their imports fail (the upstream code catches ImportError).
    for name in ("selective_scan_cuda", "causal_conv1d", "causal_conv1d_cuda", "causal_conv1d.cpp_functions"):
        sys.modules[name] = None
    root = _package("mamba_ssm", pkg_dir)
    m = re.search(r'__version__\s*=\s*"([^"]+)"', (pkg_dir / "__init__.py").read_text())
    root.__version__ = m.group(1) if m else None
    ops = _package("mamba_ssm.ops", pkg_dir / "ops")
    triton_pkg = _package("mamba_ssm.ops.triton", pkg_dir / "ops" / "triton")
    root.ops, ops.triton = ops, triton_pkg

    ln = types.ModuleType("mamba_ssm.ops.triton.layer_norm")

    def _layer_norm_fwd(*a, **k):  # imported unconditionally by selective_scan_interface; unused by Mamba
        raise RuntimeError("triton layer norm is stubbed out (CPU reference run)")

    ln._layer_norm_fwd = _layer_norm_fwd
    sys.modules[ln.__name__] = ln
    ssu = types.ModuleType("mamba_ssm.ops.triton.selective_state_update")  # no attribute -> ImportError -> None
    sys.modules[ssu.__name__] = ssu

    ssi = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    ms = importlib.import_module("mamba_ssm.modules.mamba_simple")

    def _no_fast_path(*a, **k):
        raise RuntimeError("fast path must not run in the CPU reference")

    ms.selective_scan_fn = ssi.selective_scan_ref
    ms.causal_conv1d_fn = None
    ms.causal_conv1d_update = None
    ms.selective_state_update = None
    ms.mamba_inner_fn = _no_fast_path
    orig_init = ms.Mamba.__init__
    if not getattr(orig_init, "_cpu_reference", False):
        def __init__(self, *args, use_fast_path=False, **kwargs):
            orig_init(self, *args, use_fast_path=use_fast_path, **kwargs)
        __init__._cpu_reference = True
        ms.Mamba.__init__ = __init__
    root.Mamba = ms.Mamba
    return ms, root.__version__


def load_original(umamba_dir: Path, stem: str):
    path = umamba_dir / NETS_DIR / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"_original_umamba_{stem}", path)
    mod = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cuda.amp.autocast deprecation
        spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------------
def common_kwargs(dim):
    return {
        "conv_op": nn.Conv3d if dim == 3 else nn.Conv2d,
        "conv_bias": True,
        "norm_op": nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": nn.LeakyReLU, "nonlin_kwargs": {"inplace": True},
        "deep_supervision": True,
    }


def small_configs():
    k3 = dict(input_channels=2, num_classes=3, n_stages=4, features_per_stage=[4, 8, 16, 32],
              kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
              strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
              n_conv_per_stage=[2, 2, 2, 2], n_conv_per_stage_decoder=[2, 2, 2], **common_kwargs(3))
    k2 = dict(input_channels=2, num_classes=3, n_stages=5, features_per_stage=[4, 8, 16, 16, 32],
              kernel_sizes=[[3, 3]] * 5, strides=[[1, 1]] + [[2, 2]] * 4,
              n_conv_per_stage=[2] * 5, n_conv_per_stage_decoder=[2] * 4, **common_kwargs(2))
    return [
        ("umamba_bot_3d", "UMambaBot_3d", "UMambaBot", k3, (2, 2, 12, 16, 16)),
        ("umamba_enc_3d", "UMambaEnc_3d", "UMambaEnc", dict(k3, input_size=[12, 16, 16]), (2, 2, 12, 16, 16)),
        ("umamba_bot_2d", "UMambaBot_2d", "UMambaBot", k2, (2, 2, 32, 16)),
        ("umamba_enc_2d", "UMambaEnc_2d", "UMambaEnc", dict(k2, input_size=[32, 16]), (2, 2, 32, 16)),
    ]


def full_configs():
    hip3 = dict(input_channels=1, num_classes=3, n_stages=4, features_per_stage=[32, 64, 128, 256],
                kernel_sizes=[[3, 3, 3]] * 4, strides=[[1, 1, 1]] + [[2, 2, 2]] * 3,
                n_conv_per_stage=[2] * 4, n_conv_per_stage_decoder=[2] * 3, **common_kwargs(3))
    brats = dict(input_channels=4, num_classes=3, n_stages=6, features_per_stage=[32, 64, 128, 256, 320, 320],
                 kernel_sizes=[[3, 3, 3]] * 6, strides=[[1, 1, 1]] + [[2, 2, 2]] * 5,
                 n_conv_per_stage=[2] * 6, n_conv_per_stage_decoder=[2] * 5, **common_kwargs(3))
    hip2 = dict(input_channels=1, num_classes=3, n_stages=4, features_per_stage=[32, 64, 128, 256],
                kernel_sizes=[[3, 3]] * 4, strides=[[1, 1]] + [[2, 2]] * 3,
                n_conv_per_stage=[2] * 4, n_conv_per_stage_decoder=[2] * 3, **common_kwargs(2))
    return [
        ("umamba_bot_3d/hippocampus", "UMambaBot_3d", "UMambaBot", hip3),
        ("umamba_enc_3d/hippocampus", "UMambaEnc_3d", "UMambaEnc", dict(hip3, input_size=[40, 56, 40])),
        ("umamba_bot_3d/brats", "UMambaBot_3d", "UMambaBot", brats),
        ("umamba_enc_3d/brats", "UMambaEnc_3d", "UMambaEnc", dict(brats, input_size=[128, 128, 128])),
        ("umamba_bot_2d/hippocampus", "UMambaBot_2d", "UMambaBot", hip2),
        ("umamba_enc_2d/hippocampus", "UMambaEnc_2d", "UMambaEnc", dict(hip2, input_size=[56, 40])),
    ]


def jsonable(kwargs):
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, type):
            v = f"{v.__module__}.{v.__qualname__}"
            v = v.replace("torch.nn.modules.conv.", "torch.nn.") \
                 .replace("torch.nn.modules.instancenorm.", "torch.nn.") \
                 .replace("torch.nn.modules.activation.", "torch.nn.")
        out[k] = copy.deepcopy(v)
    return out


def build(module, cls_name, kwargs, ms):
    # list copies: the originals mutate n_conv_per_stage / n_conv_per_stage_decoder in place
    kw = copy.deepcopy(kwargs)
    with contextlib.redirect_stdout(io.StringIO()) as log:
        model = getattr(module, cls_name)(**kw)
    for m in model.modules():
        if isinstance(m, ms.Mamba):
            assert m.use_fast_path is False
    return model, log.getvalue()


def param_count(model):
    return int(sum(p.numel() for p in model.parameters()))


# ----------------------------------------------------------------------------------------------
def record(args):
    ms, mamba_version = install_cpu_mamba_ssm(args.mamba.resolve())
    from nnunetv2.utilities.network_initialization import InitWeights_He
    import dynamic_network_architectures
    try:
        from importlib.metadata import version
        dna_version = version("dynamic_network_architectures")
    except Exception:
        dna_version = getattr(dynamic_network_architectures, "__version__", None)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(8, torch.get_num_threads())))
    args.out.mkdir(parents=True, exist_ok=True)
    modules = {}
    summary = []

    for name, stem, cls_name, kwargs, in_shape in small_configs():
        module = modules.setdefault(stem, load_original(args.umamba, stem))
        torch.manual_seed(0)
        model, log = build(module, cls_name, kwargs, ms)
        model.apply(InitWeights_He(1e-2))
        model = model.float().cpu()
        sd = model.state_dict()
        init_stats = {}
        for k, t in sd.items():
            t = t.detach().double()
            init_stats[k] = [float(t.mean()), float(t.std(correction=0)), float(t.min()), float(t.max())]

        # The decoder keeps a reference to the encoder (``self.encoder = encoder``), so the state dict
        # holds every encoder tensor twice ("encoder.*" and "decoder.encoder.*", same storage).
        # Perturb each distinct tensor once, in state_dict order of first appearance.
        first_key, aliases = {}, {}
        for k, t in sd.items():
            aliases[k] = first_key.setdefault(t.data_ptr() if t.numel() else id(t), k)
        unique = [(k, sd[k]) for k in sd if aliases[k] == k]
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for k, t in unique:  # state_dict tensors share storage with the parameters/buffers
                if t.is_floating_point():
                    t += 0.05 * (t.abs().mean() + 1e-2) * torch.randn(t.shape, generator=gen, dtype=t.dtype)
                    t.copy_(t.half().float())
        # no two distinct tensors equal by construction
        floats = [(k, t) for k, t in unique if t.is_floating_point()]
        for i, (ka, a) in enumerate(floats):
            assert torch.unique(a).numel() > min(1, a.numel() - 1), ka
            for kb, b in floats[i + 1:]:
                assert a.shape != b.shape or not torch.equal(a, b), (ka, kb)
        stored = {k: (t.detach().half().clone() if t.is_floating_point() else t.detach().clone()) for k, t in unique}
        state_dict = {k: stored[aliases[k]] for k in sd}  # aliases share one tensor (saved once)

        x = torch.randn(in_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
        model.eval()
        with torch.no_grad():
            outs = model(x.clone())
        if isinstance(outs, torch.Tensor):
            outs = [outs]
        outs = [o.detach().float().contiguous() for o in outs]
        assert all(torch.isfinite(o).all() for o in outs)

        dct = None
        if cls_name == "UMambaEnc":
            m = re.search(r"do_channel_token: (\[[^\]]*\])", log)
            dct = [s.strip() == "True" for s in m.group(1).strip("[]").split(",")]
            for s, layer in enumerate(model.encoder.mamba_layers):  # Identity where the 2D Enc has no Mamba
                assert getattr(layer, "channel_token", dct[s]) == dct[s]
        rec = {
            "network": name,
            "source": {"repository": UMAMBA_REPO, "commit": UMAMBA_COMMIT, "file": f"{NETS_DIR}/{stem}.py",
                       "class": cls_name},
            "mamba_ssm": {"repository": MAMBA_REPO, "commit": MAMBA_COMMIT, "version": mamba_version,
                          "path": "selective_scan_ref (use_fast_path=False, causal_conv1d_fn=None)"},
            "init_kwargs": jsonable(kwargs),
            "input": x,
            "outputs": outs,
            "state_dict": state_dict,
            "param_count": param_count(model),
            "init_stats": init_stats,
            "do_channel_token": dct,
            "torch_version": str(torch.__version__),
            "dna_version": dna_version,
        }
        json.dumps(rec["init_kwargs"])
        path = args.out / f"{name}.pt"
        torch.save(rec, path)
        summary.append(f"{name}: params {rec['param_count']}, outputs {[tuple(o.shape) for o in outs]}, "
                       f"do_channel_token {dct}, {path.stat().st_size} bytes")

    counts = {}
    for name, stem, cls_name, kwargs in full_configs():
        module = modules.setdefault(stem, load_original(args.umamba, stem))
        torch.manual_seed(0)
        try:
            with torch.device("meta"):
                model, log = build(module, cls_name, kwargs, ms)
        except Exception:  # fall back to CPU
            model, log = build(module, cls_name, kwargs, ms)
        entry = {"network": name.split("/")[0], "init_kwargs": jsonable(kwargs), "params": param_count(model)}
        if cls_name == "UMambaEnc":
            m = re.search(r"do_channel_token: (\[[^\]]*\])", log)
            entry["do_channel_token"] = [s.strip() == "True" for s in m.group(1).strip("[]").split(",")]
        counts[name] = entry
        summary.append(f"{name}: params {entry['params']}" +
                       (f", do_channel_token {entry['do_channel_token']}" if "do_channel_token" in entry else ""))
        del model
    (args.out / "umamba_param_counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    print("\n".join(summary))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--umamba", type=Path, required=True, help="checkout of bowang-lab/U-Mamba at " + UMAMBA_COMMIT)
    p.add_argument("--mamba", type=Path, required=True, help="checkout of state-spaces/mamba at " + MAMBA_COMMIT)
    p.add_argument("--out", type=Path, default=Path("tests/fixtures/originals"))
    record(p.parse_args())


if __name__ == "__main__":
    main()
