#!/usr/bin/env bash
# The GPU recipe of the shipped TinyWorld weights, as two chunks of < 10 minutes on one H100/H200
# (numbers and logs: results/tinyworld/README.md). Run from the repository root with tokentrim importable.
#
#   scripts/train_tinyworld_recipe.sh start  RUN_DIR GIT_SHA   # ~9.5 min: 3 VAE candidates trained side by side on
#                                                               # the one GPU (4 min), the best reconstruction kept,
#                                                               # then the DiT until the chunk's deadline
#   scripts/train_tinyworld_recipe.sh finish RUN_DIR GIT_SHA EXPORT_DIR RESULTS_DIR
#                                                               # ~9.5 min: DiT resumed, its total fitted to this
#                                                               # chunk (linear lr decay over the last 30%), eval, export
set -euo pipefail
mode=$1 run=$2 sha=$3
train="python3 scripts/train_tinyworld.py seed=0 git_sha=$sha"
dit="dit.steps=100000 dit.compile=true dit.pool_size=2048 dit.pool_steps=512"
vae_common="vae.latent_frames=2 vae.warmup=100 vae.steps=100000 vae.budget_s=230 stages=[vae] max_seconds=275"
# candidate name -> its VAE overrides (the DiT chunks repeat the winner's, since they rebuild the VAE from config)
declare -A cand=(
  [a]="vae.lr=1e-3 vae.batch_size=32"
  [b]="vae.lr=2e-3 vae.batch_size=32"
  [c]="vae.lr=1e-3 vae.batch_size=32 vae.config.base_dim=32"
)
case $mode in
start)
  for k in "${!cand[@]}"; do
    $train out_dir=$run/vae_$k $vae_common ${cand[$k]} > $run.vae_$k.log 2>&1 &
  done
  wait
  best=$(python3 - "$run" <<'PY'
import json, sys
from pathlib import Path
def score(d):  # mean reconstruction score of the held-out clips over the dimensions the DiT bar reads
    e = json.loads((d / "meta.json").read_text()).get("vae_eval") or {}
    return sum(e.get(k, 0.0) for k in ("object_count", "colour_fidelity", "shape_persistence")) / 3
runs = sorted((d for d in Path(sys.argv[1]).glob("vae_*") if (d / "meta.json").is_file()), key=score, reverse=True)
if not runs:
    sys.exit(f"no VAE candidate under {sys.argv[1]} finished (see {sys.argv[1]}.vae_*.log)")
for r in runs:
    print(f"{r.name}: {score(r):.3f}", file=sys.stderr)
print(runs[0].name.removeprefix("vae_"))
PY
)
  echo "best VAE candidate: $best (${cand[$best]})"
  echo "$best" > $run/best_vae
  cp -r $run/vae_$best $run/main
  $train resume_dir=$run/main out_dir=$run/main stages=[dit] max_seconds=${DIT_SECONDS:-270} $dit ${cand[$best]}
  ;;
finish)
  best=$(cat $run/best_vae)
  $train resume_dir=$run/main out_dir=$run/main stages=[dit,eval,export] max_seconds=${DIT_SECONDS:-470} \
    dit.auto_steps=true $dit ${cand[$best]} export.dir=$4 export.results_dir=$5
  ;;
*)
  echo "usage: $0 start|finish RUN_DIR GIT_SHA [EXPORT_DIR RESULTS_DIR]" >&2
  exit 2
  ;;
esac
