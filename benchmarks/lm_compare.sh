#!/usr/bin/env bash
# BK-Core Phase 1 small vs Phase 2 small vs a Transformer of Phase 2's parameter count on
# tiny-Shakespeare (char tokenizer, vocab 65), on the accelerator machine. Run from the repo root:
#
#   OUT=$OUT bash benchmarks/lm_compare.sh                 # MODE=train: the three trainings
#   MODE=scale OUT=$OUT bash benchmarks/lm_compare.sh      # tokens/s + peak memory at 1k/8k/64k
#
# MODE=train: each of configs/lm/{phase1,phase2,transformer}_small.yaml (same data split,
#   seq_len 256, batch 32, AdamW, seed, precision auto = bf16-mixed on CUDA) trains one after
#   another for the same wall time, `--max-minutes $MINUTES` (Lightning's Timer: training
#   time including the in-run validations; max_epochs is raised to 1000 so the time limit
#   binds), with trainer.logger none; run_lm_training then validates the final weights on the
#   whole validation split. Results in $OUT/lm/<name>/{lm.json,metrics.csv,tokenizer.json}
#   and $OUT/lm/summary.json; checkpoints are deleted (only json/csv come back). Prints per
#   run: final (and best) validation loss in nats/char, steps, tokens/s, peak memory.
# MODE=scale: python3 benchmarks/bench_lm_scaling.py --out $OUT/lm_scaling.json (PyTorch's SDPA
#   kernel choice), then the Transformer alone with --attention math (materialized T x T
#   scores) -> $OUT/lm_scaling_math.json (MATH=0 skips it).
# MODE=all: both (about 3 x MINUTES + 2 min: over one 10-minute device call at MINUTES=2.5).
#
# Environment: OUT (required), MINUTES (2.5), MODE (train), MODELS ("phase1_small phase2_small
#   transformer_small"), TEXT (../shared/data/text/tinyshakespeare.txt), VAL_INTERVAL
#   (trainer.val_check_interval; default: the configs' 0.25 epoch), EXTRA_OVERRIDES (JSON
#   deep-merged into every config last, e.g. a tiny model for a CPU smoke test), SEQ_LENS,
#   STEPS, BATCH (benchmark options), MATH (1), PY (python3).
#
# CPU smoke test (this checkout's venv, which has polars/pydantic: setup.sh is not sourced):
#   PY=.venv/bin/python OUT=/tmp/lmcmp MINUTES=0.2 \
#   EXTRA_OVERRIDES='{"trainer":{"accelerator":"cpu","num_workers":0,"limit_val_batches":4}}' \
#   bash benchmarks/lm_compare.sh
#   PY=.venv/bin/python OUT=/tmp/lmcmp MODE=scale SEQ_LENS=64,128 STEPS=2 bash benchmarks/lm_compare.sh
set -u
: "${OUT:?set OUT to the output directory}"
PY=${PY:-python3}
MODE=${MODE:-train}
MINUTES=${MINUTES:-2.5}
MODELS=${MODELS:-phase1_small phase2_small transformer_small}
TEXT=${TEXT:-../shared/data/text/tinyshakespeare.txt}
[ -f "$TEXT" ] || TEXT=artifacts/shared/data/text/tinyshakespeare.txt  # a copy carried to the GPU machine
if ! "$PY" -c "import polars, pydantic" >/dev/null 2>&1; then
  # the GPU machine has torch/lightning/triton but not polars/pydantic: a local setup script
  # (not in the repo) installs them from wheels carried along
  [ -f artifacts/device/setup.sh ] && source artifacts/device/setup.sh
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

train() {
  [ -f "$TEXT" ] || { echo "no text file $TEXT"; return 3; }
  local cfgdir logdir
  cfgdir=$(mktemp -d /tmp/lm_compare_cfg.XXXXXX)
  logdir=${LOGDIR:-/tmp/lm_compare_logs}
  mkdir -p "$OUT/lm" "$logdir"
  for name in $MODELS; do
    NAME=$name CFGDIR=$cfgdir "$PY" - <<'PY' || { echo "$name: config failed"; continue; }
import json, os
import yaml
name = os.environ["NAME"]
raw = yaml.safe_load(open(f"configs/lm/{name}.yaml"))
raw["trainer"].update(logger="none", max_epochs=1000)
if os.environ.get("VAL_INTERVAL"):
    value = float(os.environ["VAL_INTERVAL"])
    raw["trainer"]["val_check_interval"] = int(value) if value > 1 else value
def merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
merge(raw, json.loads(os.environ.get("EXTRA_OVERRIDES") or "{}"))
yaml.safe_dump(raw, open(os.path.join(os.environ["CFGDIR"], f"{name}.yaml"), "w"), sort_keys=False)
PY
    echo "== $name: training for $MINUTES min"
    start=$(date +%s)
    "$PY" -c "import sys; from kizashi.cli import app; sys.argv[0]='kizashi'; app()" lm train \
      --config "$cfgdir/$name.yaml" --text "$TEXT" --out "$OUT/lm/$name" --max-minutes "$MINUTES" --json \
      > "$logdir/$name.stdout" 2> "$logdir/$name.log"
    rc=$?
    echo "$name: rc=$rc in $(( $(date +%s) - start )) s"
    if [ $rc -ne 0 ]; then
      tail -30 "$logdir/$name.log"
    else
      grep -E "val loss|best validation|parameters" "$logdir/$name.log" | tail -4
    fi
    rm -rf "$OUT/lm/$name/checkpoints" "$OUT/lm/$name/logs"
  done
  rm -rf "$cfgdir"
  MODELS="$MODELS" "$PY" - "$OUT/lm" <<'PY'
import csv, json, math, os, sys
from pathlib import Path
root = Path(sys.argv[1])
rows = []
for name in os.environ["MODELS"].split():
    path = root / name / "lm.json"
    if not path.is_file():
        print(f"{name}: no lm.json")
        continue
    s = json.loads(path.read_text())
    rows.append({"name": name, **{k: s.get(k) for k in (
        "model", "parameters", "steps", "fit_seconds", "last_val_loss", "best_val_loss", "best_step",
        "tokens_per_second", "peak_memory_gib", "peak_memory_kind", "seq_len", "val_tokens")}})
    rows[-1]["train_minutes"] = s["config"]["trainer"]["max_minutes"]
    rows[-1]["precision_setting"] = s["config"]["trainer"]["precision"]  # auto: bf16-mixed on CUDA
    metrics = list(csv.DictReader((root / name / "metrics.csv").open()))
    # training seconds (validations excluded) up to the final validation
    rows[-1]["train_seconds"] = float(metrics[-1]["elapsed_seconds"]) if metrics else None
    rows[-1]["validations"] = len(metrics)
(root / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
print("| run | parameters | steps | train s | fit s | final val loss (nats/char) | final bits/char | best val loss "
      "| tokens/s | peak GiB |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    bits = r["last_val_loss"] / math.log(2) if r["last_val_loss"] is not None else None
    print(f"| {r['name']} | {r['parameters']:,} | {r['steps']} | {fmt(r['train_seconds'], '.0f')} | "
          f"{fmt(r['fit_seconds'], '.0f')} | "
          f"{fmt(r['last_val_loss'], '.4f')} | {fmt(bits, '.3f')} | {fmt(r['best_val_loss'], '.4f')} | "
          f"{fmt(r['tokens_per_second'], ',.0f')} | {fmt(r['peak_memory_gib'], '.2f')} |")
print(f"budget {rows[0]['train_minutes'] if rows else '?'} min each (train s: training time without the "
      f"validations; fit s: the whole fit with them and the final validation); memory: "
      f"{rows[0]['peak_memory_kind'] if rows else '?'}; {root / 'summary.json'}")
PY
}

scale() {
  local opts=()
  [ -n "${SEQ_LENS:-}" ] && opts+=(--seq-lens "$SEQ_LENS")
  [ -n "${STEPS:-}" ] && opts+=(--steps "$STEPS")
  [ -n "${BATCH:-}" ] && opts+=(--batch "$BATCH")
  echo "== scaling benchmark"
  "$PY" benchmarks/bench_lm_scaling.py "${opts[@]}" --out "$OUT/lm_scaling.json"
  if [ "${MATH:-1}" = 1 ]; then
    echo "== Transformer with the math SDPA kernel (T x T scores materialized)"
    "$PY" benchmarks/bench_lm_scaling.py "${opts[@]}" --models transformer_small --attention math \
      --out "$OUT/lm_scaling_math.json"
  fi
}

case "$MODE" in
  train) train ;;
  scale) scale ;;
  all) train; scale ;;
  *) echo "MODE must be train, scale or all, got $MODE"; exit 2 ;;
esac
