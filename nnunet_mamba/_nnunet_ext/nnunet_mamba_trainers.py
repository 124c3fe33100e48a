"""Shim scanned by nnU-Net's external-trainer lookup: the classes live in nnunet_mamba.trainers."""
from nnunet_mamba.trainers import *  # noqa: F401,F403
