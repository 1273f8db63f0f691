#!/usr/bin/env bash
# The GPU recipe of the shipped TinyWorld weights: two chunks of < 10 minutes each on one H100/H200, the second
# resuming the first's checkpoint in RUN_DIR (numbers and logs: results/tinyworld/README.md).
#   chunk 1: VAE on clips of the DiT's full window (12 latent frames, whole-clip passes), ~5 min; then the DiT, its
#            total step count fitted to this chunk's and chunk 2's time from the measured rate (linear lr decay over
#            the last 30%), its flow loss weighting latent pixels under objects x5 (dit.object_weight=4); export.
#   chunk 2: resumes the DiT to its recorded total, then eval and export.
#   chunk 3 (fine-tune, < 5 min so that all three stay within 20 GPU-minutes): starts from the export of chunks 1-2
#            (init_dir=EXPORT_OF_CHUNK_2, given as an override), trains the DiT with 10 % null prompts so that the
#            sampler can use classifier-free guidance (sampler.guidance_scale), evaluates the guidance scales in-window,
#            exports. Its own checkpoint goes to RUN_DIR; an interrupted chunk 3 resumes with resume_dir=RUN_DIR.
# Run from the repository root with tokentrim importable:
#
#   scripts/train_tinyworld_recipe.sh RUN_DIR GIT_SHA EXPORT_DIR RESULTS_DIR 1|2|3 [extra Hydra overrides...]
#
# An interrupted chunk 1 or 2 resumes with chunk 2's command (the step counts it fixed are in RUN_DIR/meta.json).
set -euo pipefail
if [ $# -lt 5 ] || { [ "$5" != 1 ] && [ "$5" != 2 ] && [ "$5" != 3 ]; }; then
  echo "usage: $0 RUN_DIR GIT_SHA EXPORT_DIR RESULTS_DIR 1|2|3 [overrides...] (chunk 3: init_dir=EXPORT_OF_CHUNK_2)" >&2
  exit 2
fi
run=$1 sha=$2 export_dir=$3 results_dir=$4 chunk=$5
shift 5
if [ "$chunk" = 3 ]; then
  python3 scripts/train_tinyworld.py seed=0 git_sha="$sha" out_dir="$run" max_seconds=280 stages=[dit,eval,export] \
    dit.lr=2e-4 dit.warmup=100 dit.steps=100000 dit.auto_steps=true dit.later_chunks_s=0 dit.compile=true \
    dit.pool_size=2048 dit.pool_steps=512 dit.object_weight=4.0 dit.text_dropout=0.1 \
    eval.shifts=[5.0] eval.guidance_scales=[1.5,2.0,3.0,4.0] export.dir="$export_dir" \
    export.results_dir="$results_dir" "$@"
  exit
fi
if [ "$chunk" = 1 ]; then
  chunk_args=(stages=[vae,dit,export])
else
  chunk_args=(stages=[vae,dit,eval,export] resume_dir="$run")
fi
python3 scripts/train_tinyworld.py seed=0 git_sha="$sha" out_dir="$run" max_seconds=550 "${chunk_args[@]}" \
  vae.latent_frames=12 vae.batch_size=16 vae.lr=2e-3 vae.warmup=100 vae.steps=100000 vae.budget_s=300 \
  vae.sample_posterior=false \
  dit.lr=8e-4 dit.steps=100000 dit.auto_steps=true dit.later_chunks_s=460 dit.compile=true dit.pool_size=2048 \
  dit.pool_steps=512 dit.object_weight=4.0 eval.shifts=[5.0,3.0] export.dir="$export_dir" export.results_dir="$results_dir" "$@"
