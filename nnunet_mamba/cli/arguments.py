"""Argument types shared by the commands: each refuses a bad value with a message naming it."""
from __future__ import annotations

import argparse


def dataset_id(text: str) -> int:
    """An nnU-Net dataset ID: an integer from 1 to 999."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a dataset ID (an integer from 1 to 999)") from None
    if not 1 <= value <= 999:
        raise argparse.ArgumentTypeError(f"{value} is not a dataset ID (an integer from 1 to 999)")
    return value


def gpu_memory(text: str) -> float:
    """A GPU memory target in GB: below 2 GB no patch of nnU-Net's smallest network fits (the planner would shrink
    the patch forever)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GB") from None
    if not (2 <= value <= 10000):
        raise argparse.ArgumentTypeError(f"{text} GB: give the GPU memory to plan for, from 2 to 10000 GB")
    return value
