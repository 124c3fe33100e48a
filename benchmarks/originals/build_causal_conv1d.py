"""Build causal-conv1d's CUDA extension for sm_90 only, offline, from an sdist or a source folder, into a target folder.

Two builds serve ``benchmarks/originals.py``:

* SegMamba's vendored copy (``SegMamba/causal-conv1d``, version 1.0.0) into ``<mamba site>/segmamba``: SegMamba's
  Mamba runs only through its fused ``mamba_inner_fn_no_out_proj``, which calls
  ``causal_conv1d_cuda.causal_conv1d_fwd(x, w, b, silu)``, the four-argument signature of that version (later
  releases changed it), so SegMamba needs this build and no other;
* optionally upstream causal-conv1d (an sdist whose package has ``causal_conv1d/cpp_functions.py``, which
  mamba-ssm 2.3 imports) into the mamba-ssm folder itself: with it, U-Mamba, LightM-UNet and nnMamba run
  mamba-ssm's fused path (``mamba_inner_fn``) as their authors install it; without it their ``Mamba`` takes its
  slow path (``nn.Conv1d`` and the CUDA ``selective_scan_fn``).

setup.py is patched as ``benchmarks/scan.py --build-mamba`` patches mamba-ssm's: ``cc_flag`` holds only
``-gencode arch=compute_90,code=sm_90`` (CUDA 13 has no sm_70, which the vendored setup.py asks for), and
CAUSAL_CONV1D_FORCE_BUILD skips the prebuilt-wheel download. The source is copied to a temporary folder first, so the
snapshot stays as it is.

    python3 benchmarks/originals/build_causal_conv1d.py .originals/SegMamba/causal-conv1d \
        --target /tmp/mamba_site/segmamba
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

SETUP_MARKER = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
SM90_ONLY = '    cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]\n'


def source_tree(src: str, work: str) -> str:
    """A writable copy of the source: the folder copied, or the sdist unpacked (its one top folder)."""
    if os.path.isdir(src):
        dest = os.path.join(work, "src")
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        return dest
    with tarfile.open(src) as tf:
        tf.extractall(work)
    tops = [p for p in glob.glob(os.path.join(work, "*")) if os.path.isfile(os.path.join(p, "setup.py"))]
    if len(tops) != 1:
        raise SystemExit(f"{src}: expected one folder with a setup.py inside, found {tops}")
    return tops[0]


def patch_setup_for_sm90(src: str) -> None:
    path = os.path.join(src, "setup.py")
    text = open(path).read()
    if SETUP_MARKER not in text:
        raise SystemExit(f"unexpected causal-conv1d setup.py layout (no {SETUP_MARKER.strip()!r}) in {path}")
    open(path, "w").write(text.replace(SETUP_MARKER, SM90_ONLY + SETUP_MARKER, 1))


def build_wheel(src: str, wheels: str) -> str:
    env = dict(os.environ, CAUSAL_CONV1D_FORCE_BUILD="TRUE", MAX_JOBS=str(os.cpu_count() or 8))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", wheels,
                    src], check=True, env=env)
    return glob.glob(os.path.join(wheels, "*.whl"))[0]


def install_into(wheel: str, target: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", target,
                    wheel], check=True)


def build_causal_conv1d(src: str, target: str) -> str:
    """Build ``src`` for sm_90 and install it into ``target``; returns the wheel's file name."""
    start = time.time()
    work = tempfile.mkdtemp(prefix="causal_conv1d_build_")
    try:
        tree = source_tree(os.path.abspath(src), work)
        patch_setup_for_sm90(tree)
        wheel = build_wheel(tree, os.path.join(work, "wheels"))
        install_into(wheel, os.path.abspath(target))
        name = os.path.basename(wheel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"built {name} for sm_90 into {target} in {time.time() - start:.0f} s", flush=True)
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", help="causal-conv1d sdist (.tar.gz) or source folder")
    ap.add_argument("--target", required=True, help="folder to install the build into (pip --target)")
    a = ap.parse_args()
    build_causal_conv1d(a.source, a.target)


if __name__ == "__main__":
    main()
