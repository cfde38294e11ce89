#!/usr/bin/env bash
# The checks a session runs when it is lent a GPU (not CI: CI has no GPU). One call, about 6 minutes:
#   1. `vlx bench gpu`: the 7B-shaped recipes in bf16 (training tokens/s, MFU, predict_action Hz and actions/s — the
#      openvla-oft-7b target is >= 100 actions/s —, peak memory), then `vlx bench action-rate` on the GPU;
#   2. on a machine with 2+ GPUs: FSDP against plain data-parallel training of llava-tiny (two stages: the full
#      weights gathered at the end of a stage and reloaded for the next) and prismatic-tiny (timm towers):
#      checkpoint tensor names and shapes must equal the plain run's, validation losses must agree, and `vlx eval`
#      must load the FSDP checkpoint. (FSDP on one device is refused: nothing to shard, and PyTorch's NO_SHARD
#      checkpoints lose frozen weights; tests/training/test_fsdp_checkpoint.py checks the gathering on CPUs.)
# The GPU machine has torch, lightning, h5py, ...; the packages it lacks or holds in other versions travel as wheels
# in .whl/ (ignored): hydra-core, omegaconf, antlr4-python3-runtime, transformers, timm, peft. Output goes to $OUT.
# Fetch them here first (pure-Python wheels; antlr4 4.9.3 exists only as an sdist, so it is built):
#   pip download -q --no-deps -d .whl transformers==5.24.0 timm==1.0.31 peft==0.21.2 hydra-core==1.3.8 omegaconf==2.3.1
#   pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
# then call the device tool with carry=[".whl"] and `bash .ci/gpu-session.sh` (about 4 minutes on an H200).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLX_HOME=/tmp/vlx-home
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
vlx() { python3 -m vlx "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, timm, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__)"

# 1. The benchmark (recorded in docs/BENCHMARKS.md); `.ci/gpu-session.sh fsdp` skips it.
[ "${1:-all}" = fsdp ] || timeout 330 python3 -m vlx bench gpu 2>&1 | tee "$OUT/bench-gpu.txt"
[ "${1:-all}" = fsdp ] || timeout 120 python3 -m vlx bench action-rate --threads 8 2>&1 | tee "$OUT/bench-action-rate.txt"

# 2. FSDP against plain data-parallel training, same data and seed (2+ GPUs).
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -lt 2 ]; then
  echo "one GPU: the FSDP comparison needs 2+ (trainer=fsdp on one device is refused)"
  exit 0
fi
(vlx data assets recipe=llava-tiny && vlx data assets recipe=prismatic-tiny && vlx data shapes --n-train 2000 --n-val 200) \
  > "$OUT/data.txt" 2>&1 || { tail -20 "$OUT/data.txt"; exit 1; }
short="logger=none stages.finetune.epochs=1"
for recipe in llava-tiny prismatic-tiny; do
  extra=""; [ "$recipe" = llava-tiny ] && extra="stages.align.epochs=1"
  for trainer in gpu fsdp; do
    timeout 90 python3 -m vlx train recipe=$recipe trainer=$trainer trainer.devices=$gpus run_name=$trainer-$recipe \
      $short $extra > "$OUT/train-$trainer-$recipe.txt" 2>&1 || { echo "FAILED: $trainer $recipe"; tail -40 "$OUT/train-$trainer-$recipe.txt"; }
  done
done
python3 - <<'EOF' 2>&1 | tee "$OUT/fsdp-compare.txt"
import json
from pathlib import Path
from safetensors import safe_open
for recipe, stages in (("llava-tiny", ("align", "finetune")), ("prismatic-tiny", ("finetune",))):
    for stage in stages:
        found = {}
        for trainer in ("gpu", "fsdp"):
            ckpt = Path(f"runs/{trainer}-{recipe}/checkpoints/{stage}")
            if not (ckpt / "vlx.json").is_file():
                print(f"{recipe} {stage} {trainer}: no checkpoint"); continue
            with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
                tensors = {k: f.get_tensor(k).float() for k in f.keys()}
            found[trainer] = (shapes, json.loads((ckpt / "vlx.json").read_text())["metrics"], tensors)
        if len(found) == 2:
            (gs, gm, gt), (fs, fm, ft) = found["gpu"], found["fsdp"]
            names = "same" if gs == fs else f"DIFFER: only gpu {sorted(set(gs) - set(fs))[:5]} only fsdp {sorted(set(fs) - set(gs))[:5]}"
            print(f"{recipe} {stage}: tensors {len(gs)} vs {len(fs)} ({names}); "
                  + "; ".join(f"{k} gpu {gm.get(k, float('nan')):.4f} fsdp {fm.get(k, float('nan')):.4f}"
                              for k in ("train/loss", "val/loss", "val/token_accuracy") if k in gm or k in fm))
            parts = {}
            for k in set(gt) & set(ft):
                diff = ((gt[k] - ft[k]).abs().max() / gt[k].abs().max().clamp_min(1e-12)).item()
                parts[k.split(".")[0]] = max(parts.get(k.split(".")[0], 0.0), diff)
            print(f"  max relative difference gpu vs fsdp per part: {parts}")
EOF
timeout 60 python3 -m vlx eval checkpoint=runs/fsdp-llava-tiny/checkpoints/finetune eval.limit=200 logger=none \
  > "$OUT/eval-fsdp.txt" 2>&1; tail -8 "$OUT/eval-fsdp.txt"
grep -h "samples_per_sec\|it/s" "$OUT"/train-*.txt | tail -4 || true
