#!/usr/bin/env bash
# The Hippocampus GPU measurements on a bare GPU machine (no registry): install carried wheels,
# preprocess MSD Hippocampus with nnU-Net's ResEnc M planner, time the networks, train on fold 0.
#   bash benchmarks/gpu_hippocampus.sh setup     # wheels from .whl_sitk/ and .whl_nn/ (pip --no-index)
#   bash benchmarks/gpu_hippocampus.sh prep      # raw Dataset004 from .gpu_data/ -> nnUNetResEncUNetMPlans
#   bash benchmarks/gpu_hippocampus.sh bench     # benchmarks/train.py, both plans, every network
#   bash benchmarks/gpu_hippocampus.sh train E   # start nnUNetTrainer/MambaTrainer/NoMambaTrainer_Eepochs (background)
#   bash benchmarks/gpu_hippocampus.sh wait S    # wait up to S seconds for the trainings, then pack the results
set -u
export nnUNet_raw=/tmp/nn/raw nnUNet_preprocessed=/tmp/nn/pre nnUNet_results=/tmp/nn/res
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
TRAINERS=(nnUNetTrainer MambaTrainer NoMambaTrainer)
source "$(dirname "$0")/gpu_lib.sh"
case "$1" in
setup)
  install_wheels
  ;;
prep)
  mkdir -p $nnUNet_raw $nnUNet_preprocessed $nnUNet_results
  cp -r .gpu_data/Dataset004_Hippocampus $nnUNet_raw/
  nnUNetv2_plan_and_preprocess -d 4 -pl nnUNetPlannerResEncM -c 3d_fullres -np 12 > $OUT/prep.log 2>&1 || tail -20 $OUT/prep.log
  ;;
bench)
  python3 benchmarks/train.py --out $OUT --steps 10 --warmup 3 --timeout 400 \
    --networks resenc_m nomamba mamba_resenc 'mamba_resenc:{"directions":2}' 'mamba_resenc:{"mixer_stages":[-1]}' \
               umamba_bot umamba_enc segmamba 2>&1 | grep -v Warning
  ;;
train)
  E=$2
  export nnUNet_compile=f nnUNet_n_proc_DA=5
  for tr in "${TRAINERS[@]}"; do
    setsid nohup nnUNetv2_train 4 3d_fullres 0 -p nnUNetResEncUNetMPlans -tr ${tr}_${E}epochs \
      > /tmp/nn/train_${tr}.log 2>&1 < /dev/null &
  done
  sleep 60; tail -n 3 /tmp/nn/train_*.log
  ;;
wait)
  wait_for_summaries "$nnUNet_results/Dataset004_Hippocampus/*/fold_0/validation/summary.json" ${#TRAINERS[@]} $2
  for f in /tmp/nn/train_*.log; do echo "== $f"; grep -E "Epoch |Pseudo dice|Epoch time|Mean Validation" $f | tail -6; done
  cp /tmp/nn/train_*.log $nnUNet_results/Dataset004_Hippocampus/ 2>/dev/null
  tar -czf $OUT/hippocampus_fold0.tgz --exclude='*.pth' --exclude='*.nii.gz' --exclude='*.npz' \
    -C $nnUNet_results Dataset004_Hippocampus
  ls -la $OUT
  ;;
esac
