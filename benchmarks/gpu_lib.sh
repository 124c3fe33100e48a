# Shared steps of the benchmarks/gpu_*.sh scripts (sourced, not run).

# Install the carried wheels on a bare GPU machine (no registry): SimpleITK first, then nnunetv2 + our wheel.
install_wheels() {
  for d in .whl_sitk .whl_nn; do
    [ -d "$d" ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "$d"/*.whl
  done
  python3 -c "import nnunetv2, SimpleITK, nnunet_mamba.trainers as t; print('nnunetv2 ok', len(t.__all__), 'trainers')"
}

# wait_for_summaries GLOB COUNT SECONDS: until COUNT files match GLOB (fold validation summaries) or time is up.
wait_for_summaries() {
  local end=$((SECONDS + $3)) n
  while [ $SECONDS -lt $end ]; do
    n=$(ls $1 2>/dev/null | wc -l)
    [ "$n" -ge "$2" ] && return 0
    sleep 10
  done
  return 1
}

# wait_for_compare_reports: up to 60 s for every `nnunet-mamba compare` to write its report and exit.
wait_for_compare_reports() {
  for _ in $(seq 60); do pgrep -f "nnunet-mamba compare" > /dev/null || return 0; sleep 1; done
  return 1
}
