#!/usr/bin/env bash
# AdrenalMNIST3D classification on a bare GPU machine: MambaClassifierTrainer vs NoMambaClassifierTrainer,
# both on one GPU at the same time, nnU-Net's plans and preprocessing, fold 0 = official train / val split.
#   bash benchmarks/gpu_classification.sh setup            # wheels from .whl_sitk/ and .whl_nn/ (pip --no-index)
#   bash benchmarks/gpu_classification.sh prep [NPZ]       # convert NPZ (default $ADRENAL_NPZ or
#                                                          #   shared/data/medmnist/adrenalmnist3d.npz), plan, preprocess
#   bash benchmarks/gpu_classification.sh train [SUFFIX]   # start both trainers (background), default schedule
#                                                          #   20epochs_bs32 (20 x 100 iterations of batch 32)
#   bash benchmarks/gpu_classification.sh wait SECONDS     # wait for both, then pack summaries/PNGs/logs into $OUT
# Afterwards, locally: python benchmarks/classification_report.py --results <unpacked results folder>
set -u
export nnUNet_raw=/tmp/cls/raw nnUNet_preprocessed=/tmp/cls/pre nnUNet_results=/tmp/cls/res
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
DS=970
NAME=Dataset${DS}_AdrenalMNIST3D
TRAINERS=(MambaClassifierTrainer NoMambaClassifierTrainer)
source "$(dirname "$0")/gpu_lib.sh"
case "$1" in
setup)
  install_wheels
  ;;
prep)
  NPZ=${2:-${ADRENAL_NPZ:-shared/data/medmnist/adrenalmnist3d.npz}}
  mkdir -p $nnUNet_raw $nnUNet_preprocessed $nnUNet_results $OUT
  nnunet-mamba convert medmnist "$NPZ" -d $DS --name AdrenalMNIST3D --classes normal mass --overwrite \
    || python3 -m nnunet_mamba.cli.main convert medmnist "$NPZ" -d $DS --name AdrenalMNIST3D --classes normal mass --overwrite
  nnUNetv2_plan_and_preprocess -d $DS -c 3d_fullres -np 12 > $OUT/prep.log 2>&1 || tail -20 $OUT/prep.log
  ;;
train)
  S=${2:-20epochs_bs32}
  export nnUNet_compile=f nnUNet_n_proc_DA=6 NNUNET_MAMBA_SEED=0
  for tr in "${TRAINERS[@]}"; do
    setsid nohup nnUNetv2_train $DS 3d_fullres 0 -tr ${tr}_${S} > /tmp/cls/train_${tr}.log 2>&1 < /dev/null &
  done
  sleep 60; tail -n 4 /tmp/cls/train_*.log
  ;;
wait)
  wait_for_summaries "$nnUNet_results/$NAME/*/fold_0/validation/summary.json" ${#TRAINERS[@]} $2
  for f in /tmp/cls/train_*.log; do echo "== $f"; grep -E "val_auc|Epoch time|Validation:" $f | tail -4; done
  cp /tmp/cls/train_*.log $nnUNet_results/$NAME/ 2>/dev/null
  tar -czf $OUT/adrenalmnist3d_classification.tgz --exclude='*.pth' -C $nnUNet_results $NAME
  ls -la $OUT
  ;;
*)
  echo "usage: $0 setup|prep [NPZ]|train [SUFFIX]|wait SECONDS"; exit 2
  ;;
esac
