"""Synthetic run directories in the project's on-disk format, for the report tests (not shipped in the package).

`write_run_dir` writes given rows as they are (videos.csv, scores.csv, events/*.jsonl, config.yaml, env.json);
`synthetic_run_dir` makes plausible random content from a seeded numpy Generator (scores, wall times, and a drift
series decided by the real rule, `tokentrim.trim.TokenTrim`, on random token batches). Neither touches a model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tokentrim.report.atomic_io import write_text_atomic
from tokentrim.report.run_data import SCORES_COLUMNS, VIDEOS_COLUMNS


def write_run_dir(
    run_dir: str | os.PathLike,
    *,
    videos: Sequence[Mapping[str, Any]],
    scores: Sequence[Mapping[str, Any]] = (),
    events: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
) -> Path:
    """Write a run dir from explicit rows; missing manifest / score columns get neutral defaults."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    defaults: dict[str, Any] = {
        "backbone": "self_forcing", "trim": "none", "init": "none", "num_frames": 16, "fps": 16.0, "wall_s": 1.0,
        "num_batches": 0, "num_triggers": 0, "num_regenerations": 0, "num_pruned_tokens": 0, "status": "ok",
        "error": "",
    }
    manifest = pd.DataFrame([{**defaults, **row} for row in videos])
    if "video" not in manifest.columns:
        manifest["video"] = [f"{p}-{s}" for p, s in zip(manifest["prompt"], manifest["seed"])]
    write_text_atomic(run_dir / "videos.csv", manifest[list(VIDEOS_COLUMNS)].to_csv(index=False))
    if scores:
        score_rows = pd.DataFrame(
            [{"clip": -1, "error": "", "scorer": "vbench", "content_hash": "", **row} for row in scores]
        )
        write_text_atomic(run_dir / "scores.csv", score_rows[list(SCORES_COLUMNS)].to_csv(index=False))
    for video, rows in (events or {}).items():
        text = "".join(json.dumps({"video": video, **row}) + "\n" for row in rows)
        write_text_atomic(run_dir / "events" / f"{video}.jsonl", text)
    if config is not None:
        from omegaconf import OmegaConf

        write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(dict(config))))
    if env is not None:
        write_text_atomic(run_dir / "env.json", json.dumps(dict(env), indent=2))
    return run_dir


def drift_events(
    rng: np.random.Generator,
    *,
    num_batches: int = 10,
    warmup: int = 2,
    lam: float = 2.0,
    top_p: float = 0.1,
    grid: tuple[int, int] = (6, 10),
    spike_at: Sequence[int] = (),
    channels: int = 4,
) -> list[dict[str, Any]]:
    """Events of one video, batches t = 1..num_batches, decided by `TokenTrim` (the rule the pipelines run).

    Each batch's tokens [1, N, channels] are the previous accepted batch's plus N(0, 0.2) steps; batches in `spike_at`
    get a jump on N/8 tokens. A triggered batch is "regenerated" without its jump and accepted (R = 1).
    """
    from tokentrim.trim import TokenTrim, TokenTrimConfig

    num_tokens = grid[0] * grid[1]
    trim = TokenTrim(TokenTrimConfig(p=top_p, lam=lam, warmup=warmup))
    state = rng.normal(0.0, 1.0, size=(1, num_tokens, channels))  # [1, N, c]
    rows = []
    for t in range(1, num_batches + 1):
        calm = state + rng.normal(0.0, 0.2, size=state.shape)  # [1, N, c]
        candidate = calm.copy()
        if t in spike_at:
            jump = rng.choice(num_tokens, size=max(1, num_tokens // 8), replace=False)
            candidate[:, jump] += 3.0
        decision = trim.decide(torch.from_numpy(candidate).float())
        pruned = decision.unstable.tolist() if decision.should_prune else []
        drift = [] if decision.drift is None else [round(float(x), 5) for x in decision.drift]
        if decision.should_prune:
            candidate = calm
            final = trim.retest(torch.from_numpy(candidate).float())
        else:
            final = decision
        trim.accept(final)
        state = candidate
        values = decision.values
        rows.append({"t": t, "D": values["D"], "mu": values["mu"], "sigma": values["sigma"],
                     "threshold": values["threshold"], "is_warmup": decision.is_warmup,
                     "triggered": decision.should_prune, "retries": int(decision.should_prune),
                     "num_pruned_tokens": len(pruned), "num_pruned_entries": len(pruned) * 2,  # 2 cached frames
                     "pruned_indices": sorted(int(i) for i in pruned),
                     "decision_ms": round(decision.decision_ms, 3), "drift": drift, "grid": list(grid)})
    return rows


def synthetic_run_dir(
    run_dir: str | os.PathLike,
    *,
    trim: str = "none",
    init: str = "none",
    backbone: str = "self_forcing",
    prompts: Sequence[str] = ("a red car", "a cat on a sofa", "waves at dusk", "a city at night"),
    seeds: Sequence[int] = (0, 1),
    dimensions: Sequence[str] = ("subject_consistency", "temporal_flickering", "motion_smoothness"),
    extra_dimensions: Sequence[str] = (),
    score_shift: float = 0.0,
    wall_s: float = 10.0,
    num_batches: int = 8,
    grid: tuple[int, int] = (6, 10),
    clips_per_video: int = 2,
    device_name: str = "cpu (synthetic)",
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Random but plausible run dir; `score_shift` is added to every score (scores clipped to [0, 1])."""
    rng = np.random.default_rng(seed)
    prompt_base = {p: rng.uniform(0.80, 0.95) for p in prompts}
    is_trim = trim != "none"
    videos, scores, events = [], [], {}
    for prompt in prompts:
        for s in seeds:
            video = f"{prompt}-{s}"
            ev = drift_events(rng, num_batches=num_batches, grid=grid,
                              spike_at=(num_batches - 2,) if is_trim else ()) if num_batches else []
            if not is_trim:
                for row in ev:
                    row.update(triggered=False, retries=0, num_pruned_tokens=0, pruned_indices=[])
            triggers = sum(r["triggered"] for r in ev)
            videos.append({"video": video, "prompt": prompt, "seed": s, "backbone": backbone, "trim": trim,
                           "init": init, "wall_s": wall_s * rng.uniform(0.95, 1.05), "num_batches": num_batches,
                           "num_triggers": triggers, "num_regenerations": triggers,
                           "num_pruned_tokens": sum(r["num_pruned_tokens"] for r in ev)})
            for dim in dimensions:
                for clip in range(clips_per_video):
                    value = float(np.clip(prompt_base[prompt] + rng.normal(0, 0.02) + score_shift, 0.0, 1.0))
                    scores.append({"video": video, "clip": clip, "dimension": dim, "score": value})
            for dim in extra_dimensions:
                scores.append({"video": video, "clip": -1, "dimension": dim, "score": float(rng.uniform(0, 1)),
                               "scorer": "tinyworld"})
            events[video] = ev
    cfg: dict[str, Any] = {"trim": {"name": trim}, "init": {"name": init}, "backbone": {"name": backbone}}
    for key, value in (config or {}).items():  # one-level merge so config={"trim": {"top_p": 0.1}} keeps the name
        cfg[key] = {**cfg[key], **value} if isinstance(value, Mapping) and key in cfg else value
    env = {"device": "cpu", "device_name": device_name}
    return write_run_dir(run_dir, videos=videos, scores=scores, events=events, config=cfg, env=env)
