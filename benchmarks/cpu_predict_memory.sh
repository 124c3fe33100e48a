#!/usr/bin/env bash
# Memory over a 50-case CPU prediction run (issue: long runs). Trains a small MambaTrainer_ci model on the shipped
# Hippocampus subset, then predicts 50 MSD Hippocampus training images with nnUNetv2_predict_from_modelfolder while
# sampling the process tree's RSS: benchmarks/results/predict_memory_cpu.{json,png}.
#   bash benchmarks/cpu_predict_memory.sh [PATH_TO_Task04_Hippocampus]   (default ../shared/data/Task04_Hippocampus)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-$HERE/../.venv/bin/python}
BIN=$(dirname "$PY")
TASK=${1:-$HERE/../../shared/data/Task04_Hippocampus}
W=$(mktemp -d)
export nnUNet_raw=$W/raw nnUNet_preprocessed=$W/pre nnUNet_results=$W/res
"$BIN/nnunet-mamba" convert msd "$("$PY" -c 'from nnunet_mamba.data import HIPPOCAMPUS_DEMO; print(HIPPOCAMPUS_DEMO)')" \
  -d 980 --name HippoMem > /dev/null
"$BIN/nnUNetv2_plan_and_preprocess" -d 980 -c 3d_fullres -np 2 > /dev/null
nnUNet_n_proc_DA=0 "$BIN/nnUNetv2_train" 980 3d_fullres all -tr MambaTrainer_ci -device cpu > /dev/null
mkdir -p "$W/images"
for f in $(ls "$TASK/imagesTr"/*.nii.gz | head -50); do cp "$f" "$W/images/$(basename "${f%.nii.gz}")_0000.nii.gz"; done
"$PY" "$HERE/predict_memory.py" --model "$W/res/Dataset980_HippoMem/MambaTrainer_ci__nnUNetPlans__3d_fullres" \
  --images "$W/images" --out "$HERE/results/predict_memory_cpu"
rm -rf "$W"
