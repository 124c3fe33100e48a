#!/usr/bin/env bash
# AdrenalMNIST3D classification on a bare GPU machine: MambaClassifierTrainer vs NoMambaClassifierTrainer, the
# same schedule for both, several seeds, all on one GPU at the same time; nnU-Net's plans and preprocessing,
# fold 0 = official train / val split, trained and tabulated by `nnunet-mamba compare` ($RES: runs/seed_<S>, logs,
# comparison.{md,json,png}).
#   bash benchmarks/gpu_classification.sh setup            # wheels from .whl_sitk/ and .whl_nn/ (pip --no-index)
#   bash benchmarks/gpu_classification.sh prep [NPZ]       # convert NPZ (default $ADRENAL_NPZ or
#                                                          #   shared/data/medmnist/adrenalmnist3d.npz), plan, preprocess
#   bash benchmarks/gpu_classification.sh train [SUFFIX] [SEEDS]  # nnunet-mamba compare -j: every run at once (background);
#                                   default SUFFIX shape_bs32 (20 x 100 iterations of batch 32, no random zoom,
#                                   mirrored validation, checkpoint chosen on val AUC), SEEDS "0 1 2"
#   bash benchmarks/gpu_classification.sh wait SECONDS     # wait for all, then pack summaries/PNGs/logs into $OUT
# Afterwards, locally: nnunet-mamba compare -d 970 -c 3d_fullres -f 0 --seeds 0 1 2 --report-only -o <unpacked> \
#   -tr NoMambaClassifierTrainer_shape_bs32 MambaClassifierTrainer_shape_bs32; benchmarks/classification_report.py
set -u
export nnUNet_raw=/tmp/cls/raw nnUNet_preprocessed=/tmp/cls/pre nnUNet_results=/tmp/cls/res
RES=/tmp/cls/compare
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
  S=${2:-shape_bs32}
  SEEDS=${3:-0 1 2}
  n=$(( ${#TRAINERS[@]} * $(echo $SEEDS | wc -w) ))
  mkdir -p $RES
  # every run at once (compare -j), each with its share of the 16 cores' augmentation workers; NoMamba the baseline
  nnUNet_compile=f setsid nohup nnunet-mamba compare -d $DS -c 3d_fullres -f 0 --seeds $SEEDS -j $n -o $RES \
    -tr ${TRAINERS[1]}_$S ${TRAINERS[0]}_$S > $RES/compare.log 2>&1 < /dev/null &
  sleep 60; tail -n 8 $RES/compare.log
  ;;
wait)
  n=$(ls $RES/logs/*.log | wc -l)
  wait_for_summaries "$RES/runs/seed_*/$NAME/*/fold_0/validation/summary.json" $n $2
  wait_for_compare_reports
  tail -n 12 $RES/compare.log
  for f in $RES/logs/*.log; do echo "== $f"; grep -E "Epoch time|Validation:" $f | tail -2; done
  tar -czf $OUT/adrenalmnist3d_classification.tgz --exclude='*.pth' -C $RES .
  ls -la $OUT
  ;;
*)
  echo "usage: $0 setup|prep [NPZ]|train [SUFFIX]|wait SECONDS"; exit 2
  ;;
esac
