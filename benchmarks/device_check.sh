#!/usr/bin/env bash
# One command for a lent GPU: about 8 minutes on one H100 / H200, everything under one output folder.
#
#   bash benchmarks/device_check.sh [OUT]            # full settings (OUT default: runs/device_check)
#   TINY=1 bash benchmarks/device_check.sh OUT       # tiny settings on a CPU in seconds: checks the script works
#
# Run from the repository root with unitgan importable (pip install -e . or PYTHONPATH=src). Three parts, each
# under its own time cap (seconds, overridable), so that the whole fits 8 minutes; a part that fails or runs
# out of time is recorded as such and the next one still runs:
#   (a) da        the authors' MNIST -> USPS recipe at full width (the CoGAN code's mnist2usps_full_cogan.yaml:
#                 generator 96 / discriminator 64, batch 64, lr 2e-4, feature-matching weight 0.01, 10000
#                 iterations) for as many iterations as DA_SECONDS allow; every 500 iterations the target and
#                 source test accuracy with every scalar the trainer logs at that step (the alignment signals
#                 among them)                                                           DA_SECONDS=240
#   (b) speed     unit_paper at 256x256, batch 1: training step time in fp32 and bf16 autocast (eager), then
#                 bf16 compiled (benchmarks/speed.py)                           SPEED_SECONDS=60, COMPILE_SECONDS=90
#   (c) demo      `unitgan demo` on the device                                          DEMO_SECONDS=90
# Output: OUT/summary.json (each part's exit status, wall seconds and results), OUT/logs/*.log, OUT/da/ (the DA
# run folder with metrics.jsonl), OUT/speed_eager/, OUT/speed_compiled/ (results.json and table.md of benchmarks/speed.py), OUT/demo/ (the demo's run).
# With TINY=1 the networks are a few channels wide, the runs a few steps long, and the compiled row is skipped
# (compiling on a CPU takes minutes; its command differs from the eager one only in --modes and --precisions). DATA: a folder with mnist.npz and usps.npz (default ../shared/data).
set -uo pipefail

OUT=${1:-runs/device_check}
PY=${PYTHON:-python}
DATA=${DATA:-../shared/data}
TINY=${TINY:-0}
if [[ -e "$OUT" && -n "$(ls -A "$OUT" 2>/dev/null)" ]]; then
  echo "device_check: $OUT is not empty; give a new folder (a rerun would resume the DA run)" >&2
  exit 2
fi
mkdir -p "$OUT/logs"
for f in mnist.npz usps.npz; do
  [[ -f "$DATA/$f" ]] || { echo "device_check: $DATA/$f not found (set DATA)" >&2; exit 2; }
done

if [[ "$TINY" == 1 ]]; then
  # caps far above the tiny runs' needs (about 30 CPU s in all), so that a loaded CI machine does not hit them
  DA_SECONDS=${DA_SECONDS:-300} SPEED_SECONDS=${SPEED_SECONDS:-300} COMPILE_SECONDS=${COMPILE_SECONDS:-300}
  DEMO_SECONDS=${DEMO_SECONDS:-300}
  DA_SET=(model.ch=4 model.dis_ch=4 data.batch_size=4 train.steps=20 da.eval_every=10 train.ckpt_every=10
          train.log_every=5 train.device=cpu)
  SPEED_ROW="unit_paper:32:1"
  SPEED_SET=(--quick --translate-batch 1 --device cpu --threads 1)  # --quick: 8 channels, 1 warm-up + 2 steps
  COMPILE_MODE=skip
  DEMO_SET=(train.steps=2 train.log_every=1 train.ckpt_every=2 train.image_every=2 model.ch=4 model.dis_ch=4
            model.n_res=2 data.batch_size=2 data.synthetic_train=8 data.synthetic_test=3 train.device=cpu)
else
  DA_SECONDS=${DA_SECONDS:-240} SPEED_SECONDS=${SPEED_SECONDS:-60} COMPILE_SECONDS=${COMPILE_SECONDS:-90}
  DEMO_SECONDS=${DEMO_SECONDS:-90}
  # the CoGAN code's recipe; the preset's other keys (networks, losses, data, update order) stay as they are
  DA_SET=(model.ch=96 model.dis_ch=64 data.batch_size=64 optim.lr=0.0002 optim.dis_lr=0.0002 da.feat32_w=0.01
          train.steps=10000 da.eval_every=500 train.ckpt_every=500 train.log_every=50)
  SPEED_ROW="unit_paper:256:1"
  SPEED_SET=(--steps 5 --warmup 2)
  COMPILE_MODE=compiled
  DEMO_SET=()
fi

PARTS=()
part() {  # part NAME SECONDS COMMAND...: run under a time cap, log to OUT/logs/NAME.log, record rc and wall time
  local name=$1 secs=$2
  shift 2
  local start rc
  start=$(date +%s%N)
  echo "device_check: $name (at most ${secs} s)"
  timeout -k 20 "$secs" "$@" >"$OUT/logs/$name.log" 2>&1
  rc=$?
  PARTS+=("$name $rc $((($(date +%s%N) - start) / 1000000)) $secs")  # wall milliseconds
  echo "device_check: $name exit $rc"
}

{ nvidia-smi 2>&1 || true; "$PY" -c "import platform; print(platform.platform())"; } >"$OUT/logs/machine.log" 2>&1

# a cap's SIGTERM stops the DA run at the end of a step with a checkpoint (the loop's signal handling)
part da "$DA_SECONDS" "$PY" -m unitgan train da_mnist2usps "data.a=$DATA/mnist.npz" "data.b=$DATA/usps.npz" \
  "train.out_dir=$OUT/da" "${DA_SET[@]}"
part speed_eager "$SPEED_SECONDS" "$PY" benchmarks/speed.py --rows "$SPEED_ROW" --precisions fp32 bf16 \
  --modes eager "${SPEED_SET[@]}" --out "$OUT/speed_eager"
if [[ "$COMPILE_MODE" != skip ]]; then
  part speed_compiled "$COMPILE_SECONDS" "$PY" benchmarks/speed.py --rows "$SPEED_ROW" --precisions bf16 \
    --modes "$COMPILE_MODE" "${SPEED_SET[@]}" --out "$OUT/speed_compiled"
fi
part demo "$DEMO_SECONDS" "$PY" -m unitgan demo --out "$OUT/demo" --no-progress "${DEMO_SET[@]}"

printf '%s\n' "${PARTS[@]}" >"$OUT/logs/parts.txt"
"$PY" - "$OUT" "$TINY" <<'EOF'
import json
import sys
from pathlib import Path

out, tiny = Path(sys.argv[1]), sys.argv[2] == "1"


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


parts = {}
for line in (out / "logs" / "parts.txt").read_text().splitlines():
    name, rc, wall, cap = line.split()
    parts[name] = {"rc": int(rc), "timed_out": int(rc) in (124, 137), "wall_s": round(int(wall) / 1000, 1), "cap_s": int(cap)}
rows = []
metrics = out / "da" / "metrics.jsonl"
if metrics.is_file():
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
eval_steps = sorted({r["step"] for r in rows if "target_acc" in r})
by_step = {}
for r in rows:  # an evaluation's accuracies and the training scalars logged at the same step, as one row
    by_step.setdefault(r["step"], {}).update(r)
parts["da"]["steps_done"] = max((r["step"] for r in rows), default=0)
parts["da"]["evaluations"] = [by_step[s] for s in eval_steps]  # every da.eval_every iterations
for name in ("speed_eager", "speed_compiled"):
    if name in parts:
        parts[name]["results"] = read_json(out / name / "results.json")
if tiny:
    parts["speed_compiled"] = {"skipped": "TINY=1: compiling on a CPU takes minutes"}
parts["da"]["results"] = read_json(out / "da" / "da_results.json")  # written when the run reaches its steps
parts["demo"]["results"] = read_json(out / "demo" / "results.json")
summary = {"tiny": tiny, "machine": (out / "logs" / "machine.log").read_text().strip(), "parts": parts}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"device_check: {out / 'summary.json'}")
EOF
