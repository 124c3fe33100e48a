"""Make the stock nnU-Net CLI find nnunet-mamba's trainers with no user configuration.

nnU-Net >= 2.8 looks for trainers outside its own tree in the folders listed in the
``nnUNet_extTrainer`` environment variable. The installed ``nnunet_mamba_autoload.pth``
calls :func:`register` at interpreter start-up, which appends our shim folder
(``nnunet_mamba/_nnunet_ext``, a single module re-exporting ``nnunet_mamba.trainers``)
to that variable. It only touches ``os.environ``: no torch, no nnU-Net import.

In ``nnUNetv2_*`` processes it also installs :mod:`nnunet_mamba.stock_cli` (one clear message instead of a
traceback; prediction inputs and checkpoints checked before any work).

Opt out with ``NNUNET_MAMBA_NO_AUTOLOAD=1``.
"""
import os
import sys

SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_nnunet_ext")
ENV_VAR = "nnUNet_extTrainer"


def register() -> None:
    if os.environ.get("NNUNET_MAMBA_NO_AUTOLOAD", "").lower() in ("1", "true", "yes"):
        return
    current = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    if not any(os.path.realpath(p) == os.path.realpath(SHIM_DIR) for p in current):
        os.environ[ENV_VAR] = os.pathsep.join(current + [SHIM_DIR])
    if os.path.basename(sys.argv[0] if getattr(sys, "argv", None) else "").startswith("nnUNetv2_"):
        try:
            from nnunet_mamba import stock_cli
            stock_cli.install()
        except Exception as e:  # a broken hook must never stop nnU-Net itself
            print(f"nnunet-mamba: start-up hook not installed ({type(e).__name__}: {e})", file=sys.stderr)
