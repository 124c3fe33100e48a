set -x
bash benchmarks/gpu_scan.sh setup
nvidia-smi --query-gpu=name --format=csv
export PYTHONWARNINGS=ignore
python3 benchmarks/scan_launch_overhead.py --shape 2,512,16x16x16 --ks 1 2 3 4 --direct --json $OUT/ovh16_bf16.json
python3 benchmarks/scan_launch_overhead.py --shape 2,640,8x8x8 --ks 2 3 4 --direct --json $OUT/ovh8_bf16.json
python3 benchmarks/scan_launch_overhead.py --shape 2,640,8x8x8 --ks 2 --dtype fp32 --direct --json $OUT/ovh8_fp32.json
NNUNET_MAMBA_SCAN_DIRECT_LAUNCH=1 python3 benchmarks/scan_profile.py --shape 2,640,8x8x8 --K 2 --json $OUT/prof8.json
NNUNET_MAMBA_SCAN_DIRECT_LAUNCH=1 python3 benchmarks/scan_profile.py --shape 2,512,16x16x16 --K 2 --json $OUT/prof16.json
NNUNET_MAMBA_SCAN_DIRECT_LAUNCH=1 bash benchmarks/gpu_scan.sh checkpar
cd $OUT && tar czf ../call1.tgz . && rm -rf ./* && mv ../call1.tgz .
