"""Data shipped with nnunet-mamba (see each folder's SOURCE.md for licence and attribution)."""
from pathlib import Path

HIPPOCAMPUS_DEMO = Path(__file__).resolve().parent / "hippocampus_demo"
