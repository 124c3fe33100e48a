"""Installation contract: import names, zero-configuration trainer discovery, CPU-safe imports."""
import importlib.metadata as md
import json
import os
import pickle
import subprocess
import sys

import pytest

import nnunet_mamba.trainers as trainers


def run_py(code: str, env_update=None, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_update or {})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_installed_top_level_names_are_not_generic():
    files = md.distribution("nnunet-mamba").files
    tops = {f.parts[0] for f in files if f.parts[0] not in ("..",) and not f.parts[0].endswith(".dist-info")}
    assert tops == {"nnunet_mamba", "nnunet_mamba_autoload.pth"}, tops
    subpackages = {".".join(f.parts[:2]) for f in files if len(f.parts) > 2 and f.parts[0] == "nnunet_mamba"}
    for name in ("nnunet_mamba.trainers", "nnunet_mamba.kernels", "nnunet_mamba.dataset_conversion"):
        assert name in subpackages


def test_import_is_cpu_safe_and_light():
    mods = json.loads(run_py("import sys, json, nnunet_mamba; print(json.dumps(sorted(sys.modules)))"))
    assert "torch" not in mods
    mods = json.loads(run_py("import sys, json, nnunet_mamba.trainers, nnunet_mamba.networks; "
                             "print(json.dumps(sorted(sys.modules)))"))
    # (torch itself may import triton when it is installed; our GPU backends must stay unimported)
    assert not [m for m in mods if m.startswith(("nnunet_mamba.kernels.triton", "nnunet_mamba.kernels.mamba_ssm",
                                                 "selective_scan_cuda", "mamba_ssm"))]


def test_autoload_sets_the_external_trainer_path_without_user_configuration():
    from nnunet_mamba._autoload import SHIM_DIR
    path = run_py("import os; print(os.environ.get('nnUNet_extTrainer', ''))", drop=("nnUNet_extTrainer",))
    assert os.path.realpath(path) == os.path.realpath(SHIM_DIR)
    kept = run_py("import os; print(os.environ['nnUNet_extTrainer'])", {"nnUNet_extTrainer": "/some/dir"})
    assert kept.split(os.pathsep)[0] == "/some/dir" and len(kept.split(os.pathsep)) == 2
    off = run_py("import os; print(repr(os.environ.get('nnUNet_extTrainer')))", {"NNUNET_MAMBA_NO_AUTOLOAD": "1"},
                 drop=("nnUNet_extTrainer",))
    assert off == "None"


@pytest.fixture(scope="module")
def stock_lookup() -> dict:
    """name -> dotted class, each resolved exactly as ``nnUNetv2_train -tr name`` does (one fresh process)."""
    code = ("import json, contextlib, io; "
            "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
            f"names = {trainers.__all__[1:]!r}; found = {{}}\n"
            "for n in names:\n"
            "    with contextlib.redirect_stdout(io.StringIO()): c = f(n)\n"
            "    found[n] = c.__module__ + '.' + c.__qualname__\n"
            "print(json.dumps(found))")
    return json.loads(run_py(code, drop=("nnUNet_extTrainer",)))


@pytest.mark.parametrize("name", trainers.__all__[1:])
def test_stock_nnunet_lookup_finds_every_trainer(stock_lookup, name):
    cls = getattr(trainers, name)
    assert stock_lookup[name] == f"{cls.__module__}.{cls.__qualname__}"
    assert cls.__module__.startswith("nnunet_mamba.trainers.")
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_doctor_reports_backend_and_discovery():
    out = subprocess.run([sys.executable, "-m", "nnunet_mamba.cli.main", "doctor"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "scan backend on cpu: reference" in out.stdout
    assert "nnU-Net finds MambaTrainer as nnunet_mamba.trainers.segmentation.MambaTrainer" in out.stdout
