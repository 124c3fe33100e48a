"""``nnunet-mamba doctor``: versions, the scan backend this machine will use and why, and
whether the stock nnU-Net CLI finds our trainers."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform

TRAINER = "MambaTrainer"


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check the installation (versions, scan backend, trainer discovery)")
    p.set_defaults(func=run)


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def check_trainer_discovery(name: str = TRAINER) -> tuple[bool, str]:
    """Resolve ``name`` exactly as ``nnUNetv2_train -tr`` does."""
    from nnunet_mamba._autoload import ENV_VAR, SHIM_DIR
    paths = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    if not any(os.path.realpath(p) == os.path.realpath(SHIM_DIR) for p in paths):
        return False, (f"{ENV_VAR} does not list {SHIM_DIR}: the nnunet_mamba_autoload.pth start-up hook did not "
                       f"run (disabled by NNUNET_MAMBA_NO_AUTOLOAD, or a non-site install). Fix: export "
                       f"{ENV_VAR}={SHIM_DIR}")
    try:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            cls = recursive_find_trainer_class_by_name(name)
    except Exception as e:  # report, do not crash: this is a diagnostic
        hint = ""
        if "torchvision" in repr(e) or "nms" in repr(e):
            hint = (" (nnU-Net's trainer scan imports timm -> torchvision; install a torchvision built for your "
                    "torch, e.g. torch==2.14.1 with torchvision==0.29.1)")
        return False, f"nnU-Net's trainer lookup failed: {type(e).__name__}: {e}{hint}"
    return True, f"nnU-Net finds {name} as {cls.__module__}.{cls.__qualname__}"


def run(args=None) -> int:
    ok = True
    print(f"nnunet-mamba {_version('nnunet-mamba')}  (python {platform.python_version()}, {platform.platform()})")
    for dist in ("torch", "nnunetv2", "dynamic-network-architectures", "triton", "numpy", "SimpleITK",
                 "torchvision", "timm", "mamba-ssm"):
        print(f"  {dist:30s} {_version(dist)}")
    import torch
    from nnunet_mamba.kernels import explain_backend
    cuda = torch.cuda.is_available()
    print(f"CUDA available: {cuda}" + (f" ({torch.cuda.get_device_name(0)}, torch CUDA {torch.version.cuda})"
                                         if cuda else ""))
    for dev in (["cuda"] if cuda else []) + ["cpu"]:
        try:
            name, why = explain_backend(dev)
            print(f"scan backend on {dev}: {name}  [{why}]")
        except Exception as e:
            ok = False
            print(f"scan backend on {dev}: ERROR {e}")
    found, message = check_trainer_discovery()
    ok &= found
    print(("OK   " if found else "FAIL ") + message)
    unset = [v for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results") if not os.environ.get(v)]
    for var in unset:
        print(f"WARN {var} is not set: the stock nnU-Net commands need it (export {var}=/path/to/{var})")
    if not ok:
        print("doctor: problems found (see above)")
    elif unset:
        print(f"doctor: the installation is good; set {', '.join(unset)} before using the nnU-Net commands "
              "(`nnunet-mamba demo` sets its own)")
    else:
        print("doctor: all good")
    return 0 if ok else 1
