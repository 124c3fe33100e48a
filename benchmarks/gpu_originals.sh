#!/usr/bin/env bash
# The originals' CUDA kernels on a bare GPU machine, built once per machine into /tmp/mamba_site (kept while the
# machine stays warm), for benchmarks/originals.py. Carry .whl .originals/carry (and .whl_fa .whl_own).
#   bash benchmarks/gpu_originals.sh start   # mamba-ssm, SegMamba's causal-conv1d 1.0.0 and upstream 1.7.0, all three
#                                            #   builds at once in the background (logs /tmp/build_*.log)
#   bash benchmarks/gpu_originals.sh wait S  # wait at most S seconds for them, then print each log's tail and the sizes
set -u
MSITE=/tmp/mamba_site
case "$1" in
start)
  [ -d $MSITE/mamba_ssm ] || python3 benchmarks/scan.py --build-mamba .whl/mamba_ssm-2.3.2.post1.tar.gz --build-only \
    --mamba-target $MSITE > /tmp/build_mamba.log 2>&1 &
  [ -d $MSITE/segmamba ] || python3 benchmarks/originals/build_causal_conv1d.py .originals/carry/SegMamba/causal-conv1d \
    --target $MSITE/segmamba > /tmp/build_cc_segmamba.log 2>&1 &
  # upstream causal-conv1d goes into its own folder first: the mamba-ssm build owns $MSITE until it ends
  [ -d /tmp/cc_site/causal_conv1d ] || python3 benchmarks/originals/build_causal_conv1d.py \
    .whl/causal_conv1d-1.7.0.tar.gz --target /tmp/cc_site > /tmp/build_cc.log 2>&1 &
  echo started
  ;;
wait)
  end=$((SECONDS + $2))
  while pgrep -f "build-mamba|build_causal_conv1d" > /dev/null && [ $SECONDS -lt $end ]; do sleep 5; done
  pgrep -f "build-mamba|build_causal_conv1d" > /dev/null && echo "builds still running"
  for f in /tmp/build_*.log; do echo "== $f"; tail -2 "$f"; done
  [ -d /tmp/cc_site/causal_conv1d ] && [ -d $MSITE/mamba_ssm ] && cp -rn /tmp/cc_site/* $MSITE/
  du -sh $MSITE /tmp/cc_site 2>/dev/null
  ;;
*)
  echo "usage: $0 start|wait SECONDS"; exit 2
  ;;
esac
