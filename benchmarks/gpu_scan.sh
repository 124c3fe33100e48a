#!/usr/bin/env bash
# Scan-kernel checks and timings on a bare GPU machine (needs only torch + triton there, plus our wheel).
#   bash benchmarks/gpu_scan.sh setup          # our wheel from .whl_own/ (else .whl_nn/), no deps
#   bash benchmarks/gpu_scan.sh check [ARGS]   # check_scan_gpu.py vs float64, with the env the caller sets
#   bash benchmarks/gpu_scan.sh checkpar ARGS  # the fp32 and the bf16 cases in two processes at once (the
#                                              #   kernels compile in parallel), logs in $OUT/check_{fp32,bf16}.*
#   bash benchmarks/gpu_scan.sh ab WHEEL ARGS  # scan.py's A/B of the fused scan: the installed wheel vs the base WHEEL
#                                              #   (.whl_base/<commit>/*.whl, carried) -> $OUT/ab
#   bash benchmarks/gpu_scan.sh profile ARGS   # scan_profile.py: CUDA time per kernel of one fwd+bwd (--shape, --K)
#   bash benchmarks/gpu_scan.sh ncu KERNEL [SKIP] ARGS  # Nsight Compute on one launch of KERNEL (regex, e.g. seq_bwd)
#                                              #   after SKIP launches -> $OUT/ncu_KERNEL.txt
#   bash benchmarks/gpu_scan.sh mamba          # build mamba-ssm from .whl/ into /tmp/mamba_site (kept while the machine
#                                              #   stays warm; skipped when already there), ~2 min. Outside the working
#                                              #   tree: a build in the ignored .mamba_site/ lost its extension and most of
#                                              #   its modules by the next run
#   bash benchmarks/gpu_scan.sh table ARGS     # scan.py's side-by-side table with that build -> $OUT/table
# Keep at most 8 files under $OUT per run: the rest are not copied back (a table was lost that way).
set -u
OUT=${OUT:-/tmp/out}
MSITE=/tmp/mamba_site
mkdir -p $OUT
case "$1" in
setup)
  w=$(ls .whl_own/nnunet_mamba-*.whl 2>/dev/null || ls .whl_nn/nnunet_mamba-*.whl)
  python3 -m pip install -q --no-index --no-deps --no-compile --force-reinstall $w
  [ -f "$(dirname $w)/COMMIT" ] && cp "$(dirname $w)/COMMIT" .bench_commit  # scan.py's commit field
  python3 -c "import nnunet_mamba.kernels.triton as t; print('kernels ok')"
  ;;
check)
  shift; python3 benchmarks/check_scan_gpu.py "$@" 2>&1 | grep -v Warning
  ;;
checkpar)
  shift
  for dt in fp32 bf16; do
    python3 benchmarks/check_scan_gpu.py --dtype $dt --json $OUT/check_$dt.json "$@" > $OUT/check_$dt.log 2>&1 &
  done
  wait
  grep -hE "^(PASS|FAIL)" $OUT/check_*.log | cut -c1-230; grep -hE "ALL PASS|SOME FAILED" $OUT/check_*.log
  ;;
ab)
  base=$2; shift 2
  python3 benchmarks/scan.py --base "$base" --out-dir $OUT/ab "$@" 2>&1 | grep -v Warning
  ;;
profile)
  shift; python3 benchmarks/scan_profile.py "$@" 2>&1 | grep -v Warning
  ;;
ncu)
  kernel=$2; skip=0; shift 2
  if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then skip=$1; shift; fi
  ncu --kernel-name regex:$kernel --launch-skip $skip --launch-count 1 --section SpeedOfLight --section Occupancy \
    --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section InstructionStats \
    --print-details all python3 benchmarks/scan_profile.py --ncu-once "$@" > $OUT/ncu_$kernel.txt 2>&1
  grep -E "Duration|Throughput|Issued Warp|Registers Per|Spilling Requests  |Stall (Long|Wait|Short)" $OUT/ncu_$kernel.txt
  ;;
mamba)
  python3 -c "import sys; sys.path.insert(0, '$MSITE'); import torch, selective_scan_cuda" 2>/dev/null || \
    python3 benchmarks/scan.py --build-mamba .whl/mamba_ssm-2.3.2.post1.tar.gz --build-only --mamba-target $MSITE 2>&1 | tail -2
  ;;
table)
  shift
  [ -d $MSITE/mamba_ssm ] || { echo "no mamba-ssm build: run '$0 mamba' first"; exit 2; }
  python3 benchmarks/scan.py --mamba-target $MSITE --out-dir $OUT/table "$@" 2>&1 | grep -v Warning
  ;;
*)
  echo "usage: $0 setup|check [ARGS]|checkpar ARGS|ab WHEEL [ARGS]|profile ARGS|ncu KERNEL [SKIP] [ARGS]|mamba|table [ARGS]"
  exit 2
  ;;
esac
