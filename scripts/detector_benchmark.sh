#!/usr/bin/env bash
# The drift-detector benchmark (issue 22) end to end, for both TinyWorld models: per backbone, experiment=detectors
# (monitor baseline with saved latents + TokenTrim at the paper's defaults, scored with scorer=tinyworld), then the
# first-step monitor (trim off, drift_source=first_step), then one report over the experiment (detector.md: Tables
# D1-D5, ROC plots). Results without videos and latents are packed into OUT_DIR/detectors.tgz.
#
#   scripts/detector_benchmark.sh OUTPUT_ROOT OUT_DIR [extra overrides, e.g. device=cuda shard.count=2]
# GPU (integrator):  . .whl/device_env.sh && scripts/detector_benchmark.sh /tmp/det $OUT device=cuda scorer.vbench_dimensions=[]
# The committed results (results/tinyworld/detector/cpu) ran the same runs on the CPU, shard.count=2 shard.index=0|1.
# CPU smoke:         scripts/detector_benchmark.sh /tmp/det_smoke /tmp/det_smoke_out prompts.limit=1 \
#                      prompts.seeds=[0] num_latent_frames=12
set -euo pipefail
root=${1:?usage: detector_benchmark.sh OUTPUT_ROOT OUT_DIR [overrides...]}
out=${2:?usage: detector_benchmark.sh OUTPUT_ROOT OUT_DIR [overrides...]}
shift 2
py=${PYTHON:-python3}
mkdir -p "$out"
log="$out/detector_benchmark.log"
for backbone in tiny_drift tiny; do
  echo "== $backbone: baseline (monitor) + tokentrim $(date -u +%FT%TZ)" | tee -a "$log"
  "$py" -m tokentrim.cli run experiment=detectors backbone=$backbone paths.output_root="$root" report.plots=false \
    "$@" >> "$log" 2>&1
  echo "== $backbone: first-step monitor $(date -u +%FT%TZ)" | tee -a "$log"
  "$py" -m tokentrim.cli run experiment=detectors backbone=$backbone paths.output_root="$root" trim=none \
    trim.drift_source=first_step variant=monitor_first_step baseline=false report.plots=false "$@" >> "$log" 2>&1
done
echo "== report $(date -u +%FT%TZ)" | tee -a "$log"
"$py" -m tokentrim.cli report "$root/detectors" paths.output_root="$root" >> "$log" 2>&1
tar czf "$out/detectors.tgz" --exclude=videos --exclude=latents --exclude=.score_cache --exclude=_hydra \
  -C "$root" detectors
echo "== done $(date -u +%FT%TZ): $out/detectors.tgz" | tee -a "$log"
