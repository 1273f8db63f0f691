"""Rollout loops: Self Forcing (chunk-wise) and Rolling Forcing (rolling window), with TokenTrim between
"denoised" and "committed"."""
