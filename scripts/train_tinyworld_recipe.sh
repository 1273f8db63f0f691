#!/usr/bin/env bash
# The GPU recipe of the shipped TinyWorld weights: one chunk of < 10 minutes on one H100/H200 (VAE ~3.5 min, DiT with
# its step count fitted to the chunk's deadline and a linear lr decay over the last 30%, eval, export). Numbers and
# logs: results/tinyworld/README.md. Run from the repository root with tokentrim importable:
#
#   scripts/train_tinyworld_recipe.sh RUN_DIR GIT_SHA EXPORT_DIR RESULTS_DIR [extra Hydra overrides...]
#
# Resume an interrupted chunk with the same command plus `resume_dir=RUN_DIR` (the step counts it fixed are in
# RUN_DIR/meta.json, so the resumed run takes the same steps).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 RUN_DIR GIT_SHA EXPORT_DIR RESULTS_DIR [overrides...]" >&2
  exit 2
fi
run=$1 sha=$2 export_dir=$3 results_dir=$4
shift 4
python3 scripts/train_tinyworld.py seed=0 git_sha="$sha" out_dir="$run" stages=[vae,dit,eval,export] max_seconds=530 \
  vae.latent_frames=2 vae.batch_size=32 vae.lr=2e-3 vae.warmup=100 vae.steps=100000 vae.budget_s=200 \
  vae.sample_posterior=false \
  dit.lr=8e-4 dit.steps=100000 dit.auto_steps=true dit.compile=true dit.pool_size=2048 dit.pool_steps=512 \
  eval.shifts=[5.0,3.0] export.dir="$export_dir" export.results_dir="$results_dir" "$@"
