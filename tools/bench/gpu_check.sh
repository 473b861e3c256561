#!/usr/bin/env bash
# One short performance check on a machine with a GPU, in under 8 minutes: the DSPNet/BYOL step ratios
# (bf16 autocast, channels_last) eager and compiled, and the augmentation throughput per core with the
# CPU cores one GPU's share of the paper's batch needs at the step time just measured.
#
#   bash tools/bench/gpu_check.sh            # BUDGET_S=450 BATCH=128 STEPS=5 DEVICE=cuda by default
#
# Every part runs under what is left of the time budget; one that runs out is stopped and the script
# goes on, so whatever finished is printed. The compiled run uses the 3-DN set (3 graphs to compile).
set -u
cd "$(dirname "$0")/../.."
BUDGET_S=${BUDGET_S:-450}
BATCH=${BATCH:-128}
STEPS=${STEPS:-5}
DEVICE=${DEVICE:-cuda}
RESOLUTION=${RESOLUTION:-224}
START=$(date +%s)
LOG=$(mktemp)

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

part() {  # part NAME MAX_SECONDS COMMAND...
  local name=$1 limit=$2 remaining
  shift 2
  remaining=$(left)
  if ((remaining < 20)); then
    echo "== $name: skipped, the time budget is spent"
    return
  fi
  ((limit > remaining)) && limit=$remaining
  echo "== $name (at most ${limit} s)"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | grep -v -i "warn" | tee -a "$LOG"
  local status=${PIPESTATUS[0]}
  ((status == 124 || status == 130)) && echo "== $name: stopped at ${limit} s; partial output above"
  ((status != 0 && status != 124 && status != 130)) && echo "== $name: failed with status $status"
  return 0
}

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cpus', __import__('os').cpu_count())"
COMMON=(--device "$DEVICE" --batch "$BATCH" --resolution "$RESOLUTION" --steps "$STEPS")
part "step cost, eager (paper's 5 DNs)" 170 python tools/bench/step_cost.py "${COMMON[@]}"
part "step cost, torch.compile (3 DNs)" 200 python tools/bench/step_cost.py "${COMMON[@]}" --skip-individual --skip-memory \
  --compile --dspnet-dns mbv3_s3
# the eager DSPNet step just measured sets the images/s one GPU needs
STEP_MS=$(grep -m1 -o "DSPNet n=4 mbv3_s5 step: [0-9]*" "$LOG" | grep -o "[0-9]*$")
GPU_ARGS=()
[[ -n "$STEP_MS" ]] && GPU_ARGS=(--gpu-step-s "$(python -c "print($STEP_MS / 1000)")" --gpu-batch "$BATCH")
part "augmentation per CPU core" 60 python tools/bench/aug_throughput.py --images 48 --repeats 2 \
  --resolution "$RESOLUTION" "${GPU_ARGS[@]}"
echo "done in $(($(date +%s) - START)) s"
rm -f "$LOG"
