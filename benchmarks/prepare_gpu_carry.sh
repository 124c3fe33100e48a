#!/usr/bin/env bash
# Prepare, here (with network), what a bare GPU machine (no registry) needs, as folders to `carry`:
#   .whl/       mamba-ssm's sdist (benchmarks/scan.py --build-mamba builds it there) -- scan table
#   .whl_own/   our wheel                                                           -- every GPU run
#   .whl_sitk/  SimpleITK (53 MB: carry it alone in a first run, install it, then the rest while warm)
#   .whl_nn/    nnunetv2 2.8.1 and the pure-Python / binary deps the GPU image lacks, plus our wheel
#   .gpu_data/  Dataset004_Hippocampus in nnU-Net raw format (from ../shared/data)  -- training timings
#   .whl_base/  with a second argument (a commit): that commit's wheel, the base of scan.py / train.py --base
# (.mamba_site/ stays excluded for old run scripts; `gpu_scan.sh mamba` now builds into /tmp/mamba_site on the GPU
# machine, outside the working tree: a build inside it lost its extension by the next run)
# Wheels for CPython 3.12 on manylinux x86_64 (the GPU image: /opt/torch/.venv, Python 3.12.3).
#   bash benchmarks/prepare_gpu_carry.sh [scan|train|all] [BASE_COMMIT]   (default all, no base)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
base=${2:-}
PY=${PY:-.venv/bin/python}
for d in .whl .whl_own .whl_base .whl_sitk .whl_nn .gpu_data .mamba_site; do
  grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
grep -qx "/.bench_commit" .git/info/exclude 2>/dev/null || echo "/.bench_commit" >> .git/info/exclude
download() {  # download DIR SPEC...: binary wheels for the GPU machine's Python
  local dir=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$dir" "$@"
}
rm -rf .whl_own && $PY -m pip wheel -q --no-deps --no-build-isolation . -w .whl_own
# the commit the wheel is built from (+ "-dirty" with uncommitted changes): gpu_scan.sh setup hands it to scan.py
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benchmarks/_call.sh' || echo -dirty)" > .whl_own/COMMIT
[ -z "$base" ] || $PY benchmarks/scan.py --base "$base" --prepare-only  # prints .whl_base/<commit>/*.whl
if [ "$what" = scan ] || [ "$what" = all ]; then
  mkdir -p .whl
  ls .whl/mamba_ssm-2.3.2.post1.tar.gz >/dev/null 2>&1 || \
    python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation mamba_ssm==2.3.2.post1 -d .whl || \
    curl -sSfL -o .whl/mamba_ssm-2.3.2.post1.tar.gz "$(curl -sSf https://pypi.org/simple/mamba-ssm/ | \
      grep -o 'https://[^"#]*mamba_ssm-2.3.2.post1.tar.gz' | head -1)"
fi
if [ "$what" = train ] || [ "$what" = all ]; then
  download .whl_sitk SimpleITK==2.5.7
  for p in nnunetv2==2.8.1 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 blosc2==4.14.1 \
           dynamic_network_architectures==0.4.4 graphviz==0.21 nibabel==5.4.2 yacs==0.1.8 ndindex==1.10.1 \
           numexpr==2.14.2 connected-components-3d future unittest2 traceback2 linecache2 pydantic pydantic-core \
           annotated-types typing-inspection; do
    download .whl_nn "$p"
  done
  tmp=$(mktemp -d)  # acvl_utils has no wheel on PyPI: build one from its sdist
  python3 -m pip download -q --no-deps --no-binary :all: acvl_utils==0.2.6 -d "$tmp"
  $PY -m pip wheel -q --no-deps --no-build-isolation "$tmp"/acvl_utils-*.tar.gz -w .whl_nn
  rm -rf "$tmp"
  cp .whl_own/*.whl .whl_nn/
  [ -d .gpu_data/Dataset004_Hippocampus ] || .venv/bin/nnunet-mamba convert msd ../shared/data/Task04_Hippocampus -o .gpu_data
fi
du -sh .whl .whl_own .whl_base .whl_sitk .whl_nn .gpu_data 2>/dev/null || true
