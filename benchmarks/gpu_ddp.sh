#!/usr/bin/env bash
# `nnUNetv2_train ... -num_gpus 2 -tr MambaTrainer` on a 2-GPU machine, next to the 1-GPU run
# (same machine, same plans, same trainer, torch.compile off so both measure steady-state steps).
#   bash benchmarks/gpu_hippocampus.sh setup && bash benchmarks/gpu_hippocampus.sh prep   # first
#   bash benchmarks/gpu_ddp.sh TRAINER                                                    # then
# Writes $OUT/ddp_<TRAINER>_{1,2}gpu.log; epoch times are nnU-Net's own "Epoch time" lines.
set -u
export nnUNet_raw=/tmp/nn/raw nnUNet_preprocessed=/tmp/nn/pre nnUNet_results=/tmp/nn/res
export PYTHONUNBUFFERED=1 nnUNet_compile=f
OUT=${OUT:-/tmp/out}
TR=${1:-MambaTrainer_2epochs}
for n in 1 2; do
  rm -rf $nnUNet_results/Dataset004_Hippocampus/${TR}__*
  devs=0; [ $n = 2 ] && devs=0,1
  CUDA_VISIBLE_DEVICES=$devs timeout 280 nnUNetv2_train 4 3d_fullres 0 -p nnUNetResEncUNetMPlans -tr $TR \
    -num_gpus $n > $OUT/ddp_${TR}_${n}gpu.log 2>&1
  echo "== $n GPU(s), rc $?"; grep -E "batch size|Epoch time|train_loss|Mean Validation|Error|error" \
    $OUT/ddp_${TR}_${n}gpu.log | grep -v Warning | tail -12
done
nvidia-smi --query-gpu=name,memory.total --format=csv > $OUT/ddp_gpus.csv
