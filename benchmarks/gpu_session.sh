#!/usr/bin/env bash
# The checks to run when a CUDA machine is at hand, in one go (each step under its own time limit,
# so one that hangs costs only its own minutes): the GPU tests, a short training of each task's
# default model on the GPU (bfloat16 autocast, and float32 for deblurring) beside the CPU's
# train.json, the model's step rate at the paper's scale against the patch synthesis, and
# inference speed. Needs torch, scikit-image, scipy, PyWavelets, pyyaml, h5py, pypng and pytest
# (not MLflow, DVC, Optuna or Ray: nothing here tracks, caches or schedules); a machine without
# PyWavelets or pypng gets their wheels carried in.
#
#   benchmarks/gpu_session.sh DATA REF OUT
#
# DATA: the data/ folder a `dvc repro` wrote (data/<task>/prepared, data/<task>/degraded);
# REF: a folder with <task>.json (that run's models/<task>/seed-0/train.json) and deblur.pt
# (its models/deblur/seed-0/model.pt); OUT: where each step's log goes (<step>.log).
# ONLY="gpu_tests inference" runs only the steps named. The pipeline's stages are not run here
# (they log to MLflow); tests/bilevel/test_setup.py's fixtures run them, so it is not among the tests.
set -u
DATA=${1:-data}
REF=${2:-ref}
OUT=${3:-gpu-session}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
mkdir -p "$OUT"

step() {  # step NAME SECONDS COMMAND...: run, log to OUT/NAME.log, print its exit status
  local name=$1 limit=$2
  shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name rc=${PIPESTATUS[0]}"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, skimage, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), 'skimage', skimage.__version__, 'numpy', numpy.__version__)"
step gpu_tests 120 "$PY" -m pytest -q -rs tests/test_device.py tests/test_tiling.py tests/test_evaluation.py
step train_deblur 150 "$PY" benchmarks/gpu_train.py --task deblur --data "$DATA" --reference "$REF/deblur.json" \
  --amp auto,off
step throughput_deblur 60 "$PY" benchmarks/data_throughput.py --task deblur --profile profiles/gpu.yaml \
  --device cuda --batches 10 --steps 20 --data-workers 0
step throughput_derain 60 "$PY" benchmarks/data_throughput.py --task derain --profile profiles/gpu.yaml \
  --device cuda --batches 2 --steps 1 --data-workers 0
step throughput_dehaze 60 "$PY" benchmarks/data_throughput.py --task dehaze --profile profiles/gpu.yaml \
  --device cuda --batches 2 --steps 1 --data-workers 0
step inference 60 "$PY" benchmarks/inference_speed.py --model "$REF/deblur.pt" --device cuda
step train_derain 90 "$PY" benchmarks/gpu_train.py --task derain --data "$DATA" --reference "$REF/derain.json" --amp auto
step train_dehaze 90 "$PY" benchmarks/gpu_train.py --task dehaze --data "$DATA" --reference "$REF/dehaze.json" --amp auto
