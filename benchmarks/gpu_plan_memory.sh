#!/usr/bin/env bash
# GPU check of `nnunet-mamba plan`: train steps at every committed plan (benchmarks/results/plans/*) with the
# network it was planned for; peak memory must stay under the plan's GPU-memory target. Plus fp16 AMP rows.
# Needs only dynamic-network-architectures next to torch (carried as a wheel in .whl/).
set -u
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-deps --no-index --target /tmp/site .whl/dynamic_network_architectures-*.whl
mkdir -p /tmp/pkg/nnunet_mamba && cp -r nnunet_mamba/* /tmp/pkg/nnunet_mamba/ && cp -r kernels /tmp/pkg/nnunet_mamba/kernels
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
python3 benchmarks/train.py --plans benchmarks/results/plans/*/nnUNetMambaPlans_*.json --networks planned \
  --steps 3 --warmup 1 --timeout 200 --out $OUT --tag plans 2>&1 | grep '^{'
python3 benchmarks/train.py --plans hippocampus_resenc_m --amp fp16 --networks resenc_m mamba_resenc umamba_bot \
  umamba_enc segmamba --steps 10 --warmup 3 --out $OUT --tag fp16 2>&1 | grep '^{'
