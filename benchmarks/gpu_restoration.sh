#!/usr/bin/env bash
# Restoration on real MRI, GPU part: Hippocampus (MSD Task04) with Rician noise at 5 % of the robust maximum
# (sigma = 0.05 * 99.5th percentile, seed 0), MambaRestorationTrainer and NoMambaRestorationTrainer (5 epochs of
# 250 iterations each) trained side by side on one GPU, fold 0; then the unseen inputs (MS lesion FLAIR, DICOM
# hippocampus crops, degraded the same way on CPU beforehand) are restored. Metrics and figures come afterwards on
# CPU: benchmarks/restoration_report.py.
# Before (here, on CPU): python benchmarks/restoration_report.py unseen   # -> .gpu_data/restoration_unseen (11 MB)
# Carry .gpu_data (Dataset004_Hippocampus + restoration_unseen) and the wheels, then on the GPU machine:
#   bash benchmarks/gpu_restoration.sh setup    # wheels from .whl_sitk/ and .whl_nn/ (pip --no-index)
#   bash benchmarks/gpu_restoration.sh prep     # .gpu_data/Dataset004_Hippocampus -> Dataset604 (degraded) -> plans
#   bash benchmarks/gpu_restoration.sh train    # both trainers in the background
#   bash benchmarks/gpu_restoration.sh wait S   # wait up to S s, restore the unseen inputs, pack results into $OUT
# Pipeline check on CPU (same steps, tiny): RES_SOURCE=/work/shared/data/Task04_Hippocampus RES_MAX_CASES=40
#   RES_DEVICE=cpu RES_TRAINERS="MambaRestorationTrainer_ci NoMambaRestorationTrainer_ci" RES_NP=2 OUT=... bash ...
set -u
export nnUNet_raw=/tmp/nr/raw nnUNet_preprocessed=/tmp/nr/pre nnUNet_results=/tmp/nr/res
export PYTHONUNBUFFERED=1 nnUNet_compile=f
OUT=${OUT:-/tmp/out}
DS=Dataset604_HippocampusRician5
TRAINERS=(${RES_TRAINERS:-MambaRestorationTrainer_5epochs NoMambaRestorationTrainer_5epochs})
UNSEEN=.gpu_data/restoration_unseen
SOURCE=${RES_SOURCE:-.gpu_data/Dataset004_Hippocampus}
DEVICE=${RES_DEVICE:-cuda}
NP=${RES_NP:-12}
source "$(dirname "$0")/gpu_lib.sh"
case "$1" in
setup)
  install_wheels
  ;;
prep)
  mkdir -p $nnUNet_raw $nnUNet_preprocessed $nnUNet_results $OUT
  nnunet-mamba convert degrade $SOURCE denoise --noise rician --level 0.05 --seed 0 \
    -d 604 --name HippocampusRician5 -o $nnUNet_raw ${RES_MAX_CASES:+--max-cases $RES_MAX_CASES} \
    > $OUT/prep.log 2>&1 || tail -20 $OUT/prep.log
  nnUNetv2_plan_and_preprocess -d 604 -c 3d_fullres -np $NP -npfp $NP >> $OUT/prep.log 2>&1 || tail -20 $OUT/prep.log
  tail -3 $OUT/prep.log
  ;;
train)
  export nnUNet_n_proc_DA=${RES_DA:-6}
  for tr in "${TRAINERS[@]}"; do
    setsid nohup nnUNetv2_train 604 3d_fullres 0 -tr $tr -device $DEVICE > /tmp/nr/train_$tr.log 2>&1 < /dev/null &
  done
  sleep 60; tail -n 3 /tmp/nr/train_*.log
  ;;
wait)
  wait_for_summaries "$nnUNet_results/$DS/*/fold_0/validation/summary.json" ${#TRAINERS[@]} $2
  mkdir -p /tmp/nr/pack
  for tr in "${TRAINERS[@]}"; do
    m=$nnUNet_results/$DS/${tr}__nnUNetPlans__3d_fullres
    echo "== $tr"; grep -E "Epoch time|val PSNR|Validation complete" /tmp/nr/train_$tr.log | tail -4
    if [ -d "$UNSEEN" ] && [ -f $m/fold_0/checkpoint_final.pth ]; then
      nnunet-mamba restore -i $UNSEEN -o /tmp/nr/pack/$tr/unseen -m $m -f 0 -device $DEVICE --disable-mirroring > /tmp/nr/restore_$tr.log 2>&1 \
        || tail -5 /tmp/nr/restore_$tr.log
    fi
    mkdir -p /tmp/nr/pack/$tr
    cp -r $m/fold_0/validation /tmp/nr/pack/$tr/ 2>/dev/null
    cp $m/fold_0/progress.png $m/fold_0/training_log_*.txt /tmp/nr/pack/$tr/ 2>/dev/null
    tar -czf $OUT/${tr}_val.tgz --exclude=unseen -C /tmp/nr/pack $tr   # each under 16 MB (the fetch limit)
    [ -d /tmp/nr/pack/$tr/unseen ] && tar -czf $OUT/${tr}_unseen.tgz -C /tmp/nr/pack $tr/unseen
  done
  cp $nnUNet_raw/$DS/degradation.json $nnUNet_preprocessed/$DS/splits_final.json /tmp/nr/ 2>/dev/null
  tar -czf $OUT/logs.tgz /tmp/nr/train_*.log /tmp/nr/restore_*.log /tmp/nr/degradation.json \
    /tmp/nr/splits_final.json 2>/dev/null
  ls -la $OUT
  ;;
esac
