"""The scan's options: three environment variables read once at import, ``scan_options`` in code, and no other
environment variable read anywhere in the package beyond the documented ones."""
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

import nnunet_mamba
from nnunet_mamba.kernels import options, scan_options

# The package's own variables (README, "Environment variables") and those of the tools it runs under
OWN = {"NNUNET_MAMBA_SCAN_BACKEND", "NNUNET_MAMBA_SCAN_DETERMINISTIC", "NNUNET_MAMBA_SCAN_DIRECT_LAUNCH",
       "NNUNET_MAMBA_SEED", "NNUNET_MAMBA_TRACEBACK", "NNUNET_MAMBA_NO_AUTOLOAD"}
FOREIGN = {"nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",  # nnU-Net's paths
           "TRITON_INTERPRET"}  # Triton's interpreter switch


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("NNUNET_MAMBA_SCAN")}, **env})


def test_environment_is_read_once_at_import():
    code = ("import os; from nnunet_mamba.kernels import options as o; a = o.current(); "
            "os.environ['NNUNET_MAMBA_SCAN_DETERMINISTIC'] = '0'; print(a, o.current())")
    proc = _run(code, NNUNET_MAMBA_SCAN_BACKEND="Reference", NNUNET_MAMBA_SCAN_DETERMINISTIC="1",
                NNUNET_MAMBA_SCAN_DIRECT_LAUNCH="0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["('reference',", "True,", "False)"] * 2  # a later change is not seen


def test_a_bad_value_names_the_variable():
    proc = _run("import nnunet_mamba.kernels", NNUNET_MAMBA_SCAN_DETERMINISTIC="sometimes")
    assert proc.returncode != 0 and "NNUNET_MAMBA_SCAN_DETERMINISTIC must be 0 or 1" in proc.stderr


def test_scan_options_nest_and_restore():
    before = options.current()
    with scan_options(deterministic=True, backend="reference"):
        assert options.deterministic() and options.backend() == "reference"
        with scan_options(deterministic=False):
            assert not options.deterministic() and options.backend() == "reference"
        assert options.deterministic()
    assert options.current() == before
    with pytest.raises(RuntimeError):
        with scan_options(direct_launch=False):
            raise RuntimeError("inside")
    assert options.current() == before


def test_deterministic_follows_torch_unless_set():
    if options._FROM_ENV["deterministic"] is not None:
        pytest.skip("NNUNET_MAMBA_SCAN_DETERMINISTIC is set in this environment")
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert options.deterministic()
        with scan_options(deterministic=False):
            assert not options.deterministic()
        torch.use_deterministic_algorithms(False)
        assert not options.deterministic()
    finally:
        torch.use_deterministic_algorithms(was)


def test_the_package_reads_only_the_documented_variables():
    """Every ``os.environ.get`` / ``os.getenv`` / ``os.environ[...]`` read in the installed package names one of
    the documented variables (reads through a variable holding the name are resolved by hand below)."""
    root = pathlib.Path(nnunet_mamba.__file__).parent
    read = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"(?:os\.environ\.get|os\.getenv|environ\.get)\(\s*([^,)]+)", text):
            read.add((path.name, m.group(1).strip()))
        for m in re.finditer(r"os\.environ\[([^\]]+)\](?!\s*=[^=])", text):
            read.add((path.name, m.group(1).strip()))
    names = set()
    for where, expr in read:
        literal = re.fullmatch(r"[\"']([A-Za-z_0-9]+)[\"']", expr)
        if literal:
            names.add(literal.group(1))
        elif expr in ("ENV[name]", "ENV[\"backend\"]"):  # options.py: the three scan variables
            names |= set(options.ENV.values())
        elif expr in ("ENV_VAR", "var", "v"):  # the autoload's PYTHONPATH-like variable; loops over nnU-Net's paths
            continue
        else:
            raise AssertionError(f"{where}: environment read through {expr!r}: resolve it in this test")
    assert names - FOREIGN <= OWN, names - FOREIGN - OWN
    assert len(OWN) <= 6
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md")
    if readme.exists():  # in the source tree: each of them has a row in the README's table
        text = readme.read_text()
        assert all(f"| `{v}` |" in text for v in OWN)
