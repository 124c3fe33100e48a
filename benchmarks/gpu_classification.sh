#!/usr/bin/env bash
# AdrenalMNIST3D classification on a bare GPU machine: MambaClassifierTrainer vs NoMambaClassifierTrainer, the
# same schedule for both, several seeds, all on one GPU at the same time; nnU-Net's plans and preprocessing,
# fold 0 = official train / val split. Each seed has its own results folder ($RES/seed<S>).
#   bash benchmarks/gpu_classification.sh setup            # wheels from .whl_sitk/ and .whl_nn/ (pip --no-index)
#   bash benchmarks/gpu_classification.sh prep [NPZ]       # convert NPZ (default $ADRENAL_NPZ or
#                                                          #   shared/data/medmnist/adrenalmnist3d.npz), plan, preprocess
#   bash benchmarks/gpu_classification.sh train [SUFFIX] [SEEDS]  # start both trainers per seed (background);
#                                   default SUFFIX shape_bs32 (20 x 100 iterations of batch 32, no random zoom,
#                                   mirrored validation, checkpoint chosen on val AUC), SEEDS "0 1 2"
#   bash benchmarks/gpu_classification.sh wait SECONDS     # wait for all, then pack summaries/PNGs/logs into $OUT
# Afterwards, locally: python benchmarks/classification_report.py --results <unpacked results folder>
set -u
export nnUNet_raw=/tmp/cls/raw nnUNet_preprocessed=/tmp/cls/pre nnUNet_results=/tmp/cls/res
RES=/tmp/cls/res
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
  n=0; for seed in $SEEDS; do n=$((n + ${#TRAINERS[@]})); done
  # 16 cores shared by every job's augmentation workers
  export nnUNet_compile=f nnUNet_n_proc_DA=$(( 14 / n > 1 ? 14 / n : 1 ))
  echo "$n jobs, nnUNet_n_proc_DA=$nnUNet_n_proc_DA" | tee /tmp/cls/jobs.txt
  for seed in $SEEDS; do
    mkdir -p $RES/seed$seed
    for tr in "${TRAINERS[@]}"; do
      nnUNet_results=$RES/seed$seed NNUNET_MAMBA_SEED=$seed setsid nohup nnUNetv2_train $DS 3d_fullres 0 \
        -tr ${tr}_${S} > /tmp/cls/train_${tr}_seed$seed.log 2>&1 < /dev/null &
    done
  done
  sleep 60; tail -n 2 /tmp/cls/train_*.log
  ;;
wait)
  n=$(ls /tmp/cls/train_*_seed*.log | wc -l)
  wait_for_summaries "$RES/seed*/$NAME/*/fold_0/validation/summary.json" $n $2
  for f in /tmp/cls/train_*.log; do echo "== $f"; grep -E "Epoch time|Validation:" $f | tail -2; done
  for f in /tmp/cls/train_*_seed*.log; do
    seed=${f##*_seed}; seed=${seed%.log}; cp $f $RES/seed$seed/$NAME/ 2>/dev/null
  done
  tar -czf $OUT/adrenalmnist3d_classification.tgz --exclude='*.pth' -C $RES .
  ls -la $OUT
  ;;
*)
  echo "usage: $0 setup|prep [NPZ]|train [SUFFIX]|wait SECONDS"; exit 2
  ;;
esac
