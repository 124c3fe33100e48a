#!/usr/bin/env bash
# MSD Hippocampus 3d_fullres, 5-fold, at an equal budget, one fold per GPU sitting: nnU-Net's ResEnc M,
# NoMambaTrainer, MambaTrainer, U-Mamba Bot and SegMamba, all on the ResEnc M plans (same patch and batch), trained
# side by side through `nnunet-mamba compare -j`. Only the validation summaries, curves and logs come back; the
# comparison table is made here from every fold brought back so far (compare --report-only tabulates runs without
# their weights).
# Carry .whl_nn (and SimpleITK, see gpu_lib.sh) and .gpu_data/Dataset004_Hippocampus (prepare_gpu_carry.sh train).
#   bash benchmarks/gpu_compare_hippocampus.sh setup
#   bash benchmarks/gpu_compare_hippocampus.sh prep [RAW_DATASET]  # default .gpu_data/Dataset004_Hippocampus
#   bash benchmarks/gpu_compare_hippocampus.sh fold F [EPOCHS]     # background; EPOCHS default 5
#   bash benchmarks/gpu_compare_hippocampus.sh wait F SECONDS      # then $OUT/hippocampus_fold<F>.tgz
# Here, afterwards: tar -xzf hippocampus_fold<F>.tgz -C benchmarks/results/<date>_<card>_<commit>_hippocampus3d
#   and nnunet-mamba compare -d 4 -c 3d_fullres --report-only -o that folder -tr <the same arms> (nnUNet_raw and
#   nnUNet_preprocessed of a local Dataset004 set, for the dataset name)
set -u
export nnUNet_raw=/tmp/hc/raw nnUNet_preprocessed=/tmp/hc/pre nnUNet_results=/tmp/hc/res PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
CMP=/tmp/hc/compare
source "$(dirname "$0")/gpu_lib.sh"
arms() {  # arms EPOCHS: the compared trainers, nnU-Net's ResEnc M the baseline
  local p=nnUNetResEncUNetMPlans e=$1
  echo "nnUNetTrainer_${e}epochs@$p NoMambaTrainer_${e}epochs@$p MambaTrainer_${e}epochs@$p" \
       "UMambaBotTrainer_${e}epochs@$p SegMambaTrainer_${e}epochs@$p"
}
case "$1" in
setup)
  install_wheels
  ;;
prep)
  mkdir -p $nnUNet_raw $nnUNet_preprocessed $nnUNet_results $OUT
  cp -r "${2:-.gpu_data/Dataset004_Hippocampus}" $nnUNet_raw/
  nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres -pl nnUNetPlannerResEncM -np 12 > $OUT/prep.log 2>&1 \
    || tail -20 $OUT/prep.log
  tail -2 $OUT/prep.log
  ;;
fold)
  E=${3:-5}
  mkdir -p $CMP
  setsid nohup nnunet-mamba compare -d 4 -c 3d_fullres -f $2 -j 5 -o $CMP -tr $(arms $E) \
    > $CMP/compare_fold$2.log 2>&1 < /dev/null &
  sleep 90; tail -n 8 $CMP/compare_fold$2.log
  ;;
wait)
  wait_for_summaries "$CMP/runs/seed_0/*/*/fold_$2/validation/summary.json" 5 $3
  wait_for_compare_reports
  tail -n 14 $CMP/compare_fold$2.log
  tar -czf $OUT/hippocampus_fold$2.tgz --exclude='*.pth' --exclude='*.nii.gz' --exclude='*.npz' -C $CMP .
  ls -la $OUT
  ;;
*)
  echo "usage: $0 setup|prep [RAW]|fold F [EPOCHS]|wait F SECONDS" >&2; exit 2
  ;;
esac
