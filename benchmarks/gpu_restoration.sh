#!/usr/bin/env bash
# Restoration on real MRI, GPU part. Tasks (RES_TASKS, default "denoise sr2 kspace4"), each a degraded copy of
# Hippocampus (MSD Task04, seed 0), trained side by side on one GPU (fold 0):
#   denoise  Dataset604: Rician noise, sigma = 0.05 x 99.5th percentile    RES_TRAINERS (default *_10epochs)
#   denoise10 Dataset607: the same at 0.10                                 RES_TRAINERS
#   sr2      Dataset605: through-plane SR x2 (block means of 2 slices)     RES_TRAINERS_EXTRA (default *_3epochs)
#   kspace4  Dataset606: 4x Cartesian k-space, 8 % centre lines, zero-filled   RES_TRAINERS_EXTRA
# then (denoise tasks only) the unseen inputs (MS lesion FLAIR, DICOM hippocampus crops, degraded the same way on CPU
# beforehand) are restored. Metrics and figures come afterwards on CPU: benchmarks/restoration_report.py.
# Before (here, on CPU): python benchmarks/restoration_report.py unseen   # -> .gpu_data/restoration_unseen (11 MB)
#   (denoise10: ... unseen --level 0.10 --out .gpu_data/restoration_unseen10)
# Carry .gpu_data (Dataset004_Hippocampus + restoration_unseen) and the wheels, then on the GPU machine:
#   bash benchmarks/gpu_restoration.sh setup    # wheels from .whl_sitk/ and .whl_nn/ (pip --no-index)
#   bash benchmarks/gpu_restoration.sh prep     # .gpu_data/Dataset004_Hippocampus -> Dataset60x (degraded) -> plans
#   bash benchmarks/gpu_restoration.sh train    # every trainer of every task in the background
#   bash benchmarks/gpu_restoration.sh wait S   # wait up to S s, restore the unseen inputs, pack $OUT/<task>/
#   bash benchmarks/gpu_restoration.sh bisect   # (after prep) the NaN bisect, <= 3 min: $OUT/bisect/
#   bash benchmarks/gpu_restoration.sh seeds    # (after prep) both restorers x RES_SEEDS through nnunet-mamba compare -j
#   bash benchmarks/gpu_restoration.sh seeds-wait S  # ... then $OUT/compare_<task>.tgz (tables, summaries, logs)
# Pipeline check on CPU (same steps, tiny): RES_SOURCE=/work/shared/data/Task04_Hippocampus RES_MAX_CASES=40
#   RES_DEVICE=cpu RES_TRAINERS="MambaRestorationTrainer_ci NoMambaRestorationTrainer_ci" RES_TRAINERS_EXTRA=...
#   RES_NP=2 OUT=... bash ...
set -u
export nnUNet_raw=/tmp/nr/raw nnUNet_preprocessed=/tmp/nr/pre nnUNet_results=/tmp/nr/res
export PYTHONUNBUFFERED=1 nnUNet_compile=f
OUT=${OUT:-/tmp/out}
TASKS=(${RES_TASKS:-denoise sr2 kspace4})
TRAINERS=(${RES_TRAINERS:-MambaRestorationTrainer_10epochs NoMambaRestorationTrainer_10epochs})
TRAINERS_EXTRA=(${RES_TRAINERS_EXTRA:-MambaRestorationTrainer_3epochs NoMambaRestorationTrainer_3epochs})
UNSEEN=${RES_UNSEEN:-.gpu_data/restoration_unseen}
UNSEEN10=${RES_UNSEEN10:-.gpu_data/restoration_unseen10}
SOURCE=${RES_SOURCE:-.gpu_data/Dataset004_Hippocampus}
DEVICE=${RES_DEVICE:-cuda}
NP=${RES_NP:-12}
source "$(dirname "$0")/gpu_lib.sh"
task_id()   { case $1 in denoise) echo 604;; sr2) echo 605;; kspace4) echo 606;; denoise10) echo 607;;
                         *) echo "unknown task $1" >&2; exit 2;; esac; }
task_name() { case $1 in denoise) echo HippocampusRician5;; sr2) echo HippocampusSR2;; kspace4) echo HippocampusKspace4;;
                         denoise10) echo HippocampusRician10;; esac; }
task_args() { case $1 in denoise) echo "denoise --noise rician --level 0.05";; sr2) echo "sr --factor 2";;
                         kspace4) echo "kspace --acceleration 4 --center-fraction 0.08";;
                         denoise10) echo "denoise --noise rician --level 0.10";; esac; }
task_trainers() { case "$1" in denoise*) echo "${TRAINERS[@]}";; *) echo "${TRAINERS_EXTRA[@]}";; esac; }
task_unseen() { case "$1" in denoise) echo "$UNSEEN";; denoise10) echo "$UNSEEN10";; esac; }
case "$1" in
setup)
  install_wheels
  ;;
prep)
  mkdir -p $nnUNet_raw $nnUNet_preprocessed $nnUNet_results $OUT
  for t in "${TASKS[@]}"; do  # the tasks one after another, each with all cores
    id=$(task_id $t)
    nnunet-mamba convert degrade $SOURCE $(task_args $t) --seed 0 -d $id --name $(task_name $t) -o $nnUNet_raw \
      ${RES_MAX_CASES:+--max-cases $RES_MAX_CASES} > $OUT/prep_$t.log 2>&1 || tail -20 $OUT/prep_$t.log
    nnUNetv2_plan_and_preprocess -d $id -c 3d_fullres -np $NP -npfp $NP >> $OUT/prep_$t.log 2>&1 || tail -20 $OUT/prep_$t.log
    echo "== $t"; tail -2 $OUT/prep_$t.log
  done
  ;;
train)
  n=0; for t in "${TASKS[@]}"; do n=$((n + $(task_trainers $t | wc -w))); done
  export nnUNet_n_proc_DA=${RES_DA:-$(( 15 / n > 1 ? 15 / n : 1 ))}  # the CPU cores shared by all trainers
  for t in "${TASKS[@]}"; do
    for tr in $(task_trainers $t); do
      setsid nohup nnUNetv2_train $(task_id $t) 3d_fullres 0 -tr $tr -device $DEVICE > /tmp/nr/train_${t}_$tr.log 2>&1 < /dev/null &
    done
  done
  echo "$n trainers, nnUNet_n_proc_DA=$nnUNet_n_proc_DA each"; sleep 60; tail -n 2 /tmp/nr/train_*.log
  ;;
wait)
  n=0; for t in "${TASKS[@]}"; do n=$((n + $(task_trainers $t | wc -w))); done
  wait_for_summaries "$nnUNet_results/Dataset60[4-7]_*/*/fold_0/validation/summary.json" $n $2
  for t in "${TASKS[@]}"; do
    DS=Dataset$(task_id $t)_$(task_name $t); pack=/tmp/nr/pack/$t; mkdir -p $pack $OUT/$t
    for tr in $(task_trainers $t); do
      m=$nnUNet_results/$DS/${tr}__nnUNetPlans__3d_fullres
      echo "== $t $tr"; grep -E "Epoch time|val PSNR|Validation complete" /tmp/nr/train_${t}_$tr.log | tail -3
      unseen=$(task_unseen $t)
      if [ -n "$unseen" ] && [ -d "$unseen" ] && [ -f $m/fold_0/checkpoint_final.pth ]; then
        nnunet-mamba restore -i $unseen -o $pack/$tr/unseen -m $m -f 0 -device $DEVICE --disable-mirroring \
          > /tmp/nr/restore_${t}_$tr.log 2>&1 || tail -5 /tmp/nr/restore_${t}_$tr.log
      fi
      mkdir -p $pack/$tr
      cp -r $m/fold_0/validation $pack/$tr/ 2>/dev/null
      cp $m/fold_0/progress.png $m/fold_0/training_log_*.txt $pack/$tr/ 2>/dev/null
      tar -czf $OUT/$t/${tr}_val.tgz --exclude=unseen -C $pack $tr   # each under 16 MB (the fetch limit)
      [ -d $pack/$tr/unseen ] && tar -czf $OUT/$t/${tr}_unseen.tgz -C $pack $tr/unseen
    done
    cp $nnUNet_raw/$DS/degradation.json $OUT/$t/ 2>/dev/null
    cp $nnUNet_preprocessed/$DS/splits_final.json $OUT/$t/ 2>/dev/null
  done
  tar -czf $OUT/logs.tgz /tmp/nr/train_*.log /tmp/nr/restore_*.log 2>/dev/null
  ls -laR $OUT | head -40
  ;;
seeds)  # (after prep) both restorers of each task with RES_SEEDS (default 0 1 2), all at once, through compare
  SEEDS=(${RES_SEEDS:-0 1 2})
  for t in "${TASKS[@]}"; do
    tr=($(task_trainers $t))
    setsid nohup nnunet-mamba compare -d $(task_id $t) -c 3d_fullres -f 0 --seeds ${SEEDS[@]} -device $DEVICE \
      -j $(( ${#tr[@]} * ${#SEEDS[@]} )) -o /tmp/nr/compare_$t -tr ${tr[1]} ${tr[0]} \
      > /tmp/nr/compare_$t.log 2>&1 < /dev/null &
  done
  sleep 60; tail -n 4 /tmp/nr/compare_*.log
  ;;
seeds-wait)  # wait up to S s for every run of `seeds`, then pack each task's comparison (no weights, no images)
  n=0; for t in "${TASKS[@]}"; do n=$((n + $(task_trainers $t | wc -w) * $(echo ${RES_SEEDS:-0 1 2} | wc -w))); done
  wait_for_summaries "/tmp/nr/compare_*/runs/seed_*/*/*/fold_0/validation/summary.json" $n $2
  wait_for_compare_reports
  for t in "${TASKS[@]}"; do
    tail -n 12 /tmp/nr/compare_$t.log
    tar -czf $OUT/compare_$t.tgz --exclude='*.pth' --exclude='*.nii.gz' -C /tmp/nr compare_$t compare_$t.log
  done
  ;;
bisect)
  mkdir -p $OUT/bisect
  export nnUNet_n_proc_DA=${RES_DA:-8}
  python3 "$(dirname "$0")/restoration_nan_bisect.py" --dataset 604 --out $OUT/bisect ${RES_BISECT_ARGS:-} 2>&1 \
    | tee $OUT/bisect/bisect.log | grep -v "^20..-"
  ;;
*)
  echo "usage: $0 setup|prep|train|wait SECONDS|seeds|seeds-wait SECONDS|bisect" >&2; exit 2
  ;;
esac
