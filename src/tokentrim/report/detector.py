"""Drift-detector quality against TinyWorld's ground truth (issue 22): does the drift signal fire where the video drifts?

For runs scored with `scorer=tinyworld` (per-clip ground-truth metrics), `tokentrim report` adds `detector.md` /
`detector.csv` and ROC plots:
  1. ground-truth drift events per clip from the per-clip metrics (`report.detector.definitions`):
       * "sustained" (A): the clip starts a run of `sustain_clips` clips more than `threshold` below the mean of the
         first `reference_clips` clips;
       * "step" (B): the clip is more than `threshold` below the clip before it;
     any of `dimensions` counts. The same definitions mirrored (above instead of below) give metric RISES, whose rate
     is the noise floor of the drops: at 2-s resolution, a metric that rises as often as it falls is mostly noise.
  2. a batch is positive when an event clip overlaps its pixel frames or those of the next `lead_batches` batches.
     Batch -> pixel frames -> clips is derived from the run's own temporal layout (`temporal_layout`): latent frames of
     each batch from the events' `start_frame`, the VAE's temporal stride from videos.csv (T = 1 + s (F - 1)), the
     clips from the fps and the run's `scorer.clip_seconds` (`tokentrim.video_io.clip_spans`);
  3. ROC AUC of each per-batch signal (raw D_t, the rule's statistic (D - mu) / sigma, the batch index as a reference),
     pooled over videos and within videos; the rule's firings (D_t > mu + lam sigma on tested batches: the run's
     triggers, or, for the baseline, where it would have triggered) as precision / recall against the same number of
     firings placed at random among each video's tested batches (`permutations`, seeded), with a one-sided p-value;
  4. the paired effect of a pruning variant vs the baseline on the `effect_clips` clips from each trigger's first clip
     (mean over `dimensions`, variant - baseline, per video, then mean over videos with a bootstrap CI over videos).

Numerics are small pure functions on numpy arrays (shapes and units in their docstrings); `detector_report` assembles
them from loaded runs. Letters: C clips, B batches, D dimensions, n scored batches.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tokentrim.report.atomic_io import write_text_atomic
from tokentrim.report.run_data import RunData, _dig

logger = logging.getLogger(__name__)

DEFINITIONS = ("sustained", "step")
DIRECTIONS = ("drop", "rise")
TINYWORLD_SCORER = "tinyworld"
# the rule's own signal and one knob changed at a time (dynamic_p is absent: it changes how many tokens a trigger
# prunes, not D_t nor the firing, so its detector row is the l2 row)
DEFAULT_SIGNALS: dict[str, dict[str, Any]] = {
    "l2": {}, "cosine": {"drift_metric": "cosine"}, "l2_max": {"severity": "max"}, "l2_all_tokens": {"p": 1.0},
    "l2_from_first": {"drift_reference": "first"},
}


@dataclasses.dataclass
class DetectorConfig:
    """`report.detector`: the ground-truth drift events and the tests of the drift signal against them.

    Args:
        enabled: add the detector report for runs with `scorer=tinyworld` scores.
        dimensions: per-clip ground-truth dimensions that define events (any of them); None = every TinyWorld
            dimension the run scored.
        definitions: event definitions, a subset of ["sustained", "step"] (module docstring).
        threshold: score drop (or rise) that makes an event, in score units (scores lie in [0, 1]).
        reference_clips: "sustained": clips whose mean is the reference; events start after them.
        sustain_clips: "sustained": consecutive clips that must stay beyond the threshold.
        lead_batches: a batch is positive when an event clip overlaps it or the next `lead_batches` batches.
        effect_clips: clips after each trigger (from the trigger batch's first clip) where the paired effect is taken.
        permutations: random placements of the firings per test (0: no permutation test).
        seed: seed of the permutations and of the effect's bootstrap.
        signals: monitor-only signals replayed on the saved final latents of runs that never pruned
            (`report.signals`): name -> TokenTrimConfig overrides of the run's own trim knobs; {} = none.
    """

    enabled: bool = True
    dimensions: list[str] | None = None
    definitions: list[str] = dataclasses.field(default_factory=lambda: list(DEFINITIONS))
    threshold: float = 0.2
    reference_clips: int = 2
    sustain_clips: int = 2
    lead_batches: int = 1
    effect_clips: int = 2
    permutations: int = 2000
    seed: int = 0
    signals: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SIGNALS))

    def __post_init__(self) -> None:
        bad = [d for d in self.definitions if d not in DEFINITIONS]
        if not self.definitions or bad:
            raise ValueError(f"report.detector.definitions must be a non-empty subset of {list(DEFINITIONS)}, "
                             f"got {list(self.definitions)}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"report.detector.threshold must be in (0, 1] (scores lie in [0, 1]), got {self.threshold}")
        for key, low in (("reference_clips", 1), ("sustain_clips", 1), ("lead_batches", 0), ("effect_clips", 1),
                         ("permutations", 0)):
            if getattr(self, key) < low:
                raise ValueError(f"report.detector.{key} must be >= {low}, got {getattr(self, key)}")
        if self.dimensions is not None and not self.dimensions:
            raise ValueError("report.detector.dimensions must be null (every scored TinyWorld dimension) or a "
                             "non-empty list, got []")
        from tokentrim.report.signals import signal_config

        for name, overrides in self.signals.items():
            if not str(name).isidentifier():
                raise ValueError(f"report.detector.signals names must be identifiers, got {name!r}")
            signal_config({}, overrides or {}, name)  # raises on an unknown knob or a bad value


# ---------------------------------------------------------------------------------------------- layout
@dataclasses.dataclass(frozen=True)
class TemporalLayout:
    """Where each batch of one video lands in pixel frames and clips.

    Attributes:
        batch_latents: per batch t = 1..B, its latent frames [first, end).
        stride: VAE temporal stride s (causal Wan VAE: latent 0 -> pixel 0, latent f >= 1 -> pixels
            1 + s (f - 1) .. s f).
        clip_spans: per clip, its pixel frames [start, end) (`tokentrim.video_io.clip_spans`).
    """

    batch_latents: tuple[tuple[int, int], ...]
    stride: int
    clip_spans: tuple[tuple[int, int], ...]

    def pixel_span(self, batch: int) -> tuple[int, int]:
        """Pixel frames [start, end) of batch `batch` (0-based index into `batch_latents`)."""
        return latent_pixel_span(*self.batch_latents[batch], self.stride)

    def batch_clips(self) -> list[list[int]]:
        """Per batch, the clips its pixel frames overlap (ascending)."""
        return [overlapping_clips(self.pixel_span(b), self.clip_spans) for b in range(len(self.batch_latents))]


def latent_pixel_span(first: int, end: int, stride: int) -> tuple[int, int]:
    """Pixel frames [start, stop) decoded from latent frames [first, end) by a causal VAE of temporal stride `stride`
    (latent 0 is one pixel frame, each later latent `stride` frames: T = 1 + stride (F - 1)).

    Wan (stride 4), batch t of 3 latent frames (first = 3 (t - 1)): pixels 12 t - 15 .. 12 t - 4 for t >= 2."""
    if not 0 <= first < end or stride < 1:
        raise ValueError(f"latent frames [{first}, {end}) with stride {stride} are not a span")
    start = 0 if first == 0 else 1 + stride * (first - 1)
    return start, 1 + stride * (end - 1)


def overlapping_clips(span: tuple[int, int], clip_spans: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of the clips [s, e) that share at least one pixel frame with `span` [start, end)."""
    start, end = span
    return [c for c, (s, e) in enumerate(clip_spans) if s < end and start < e]


def vae_temporal_stride(num_frames: int, num_latent_frames: int) -> int:
    """s with num_frames = 1 + s (num_latent_frames - 1) (a causal VAE), or ValueError when no integer s fits."""
    if num_latent_frames < 2 or (num_frames - 1) % (num_latent_frames - 1) or num_frames < num_latent_frames:
        raise ValueError(f"{num_frames} pixel frames from {num_latent_frames} latent frames is not a causal VAE's "
                         f"1 + s (F - 1) layout")
    return (num_frames - 1) // (num_latent_frames - 1)


def temporal_layout(start_frames: Sequence[int], num_latent_frames: int, num_frames: int, fps: float,
                    clip_seconds: float) -> TemporalLayout:
    """The layout of one video from its events' `start_frame` per batch (t order), its latent and pixel frame counts,
    its fps and the scorer's clip length (seconds)."""
    from tokentrim.video_io import clip_spans

    starts = [int(s) for s in start_frames]
    if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= num_latent_frames:
        raise ValueError(f"batch start frames {starts} do not tile {num_latent_frames} latent frames")
    ends = [*starts[1:], num_latent_frames]
    return TemporalLayout(tuple(zip(starts, ends)), vae_temporal_stride(num_frames, num_latent_frames),
                          tuple(clip_spans(num_frames, fps, clip_seconds)))


# ---------------------------------------------------------------------------------------------- labels
def clip_events(scores: np.ndarray, definition: str, direction: str, *, threshold: float, reference_clips: int,
                sustain_clips: int) -> np.ndarray:
    """Event onsets per clip of one dimension. scores: [C] in [0, 1] (NaN = not scored) -> bool [C].

    "sustained": clip c >= reference_clips starts `sustain_clips` consecutive clips more than `threshold` below (drop)
    / above (rise) the mean of the first `reference_clips` clips, and clip c - 1 did not. "step": clip c >= 1 is more
    than `threshold` below / above clip c - 1. NaN clips never make or continue an event."""
    x = np.asarray(scores, dtype=float) * (1.0 if direction == "drop" else -1.0)  # a rise of s is a drop of -s
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
    num = x.shape[0]
    out = np.zeros(num, dtype=bool)
    if definition == "step":
        with np.errstate(invalid="ignore"):
            out[1:] = (x[:-1] - x[1:]) > threshold
        return out
    if definition != "sustained":
        raise ValueError(f"definition must be one of {list(DEFINITIONS)}, got {definition!r}")
    head = x[:reference_clips]
    if num <= reference_clips or not np.isfinite(head).any():
        return out
    with np.errstate(invalid="ignore"):
        below = x < np.nanmean(head) - threshold  # [C]
    below[:reference_clips] = False
    sustained = np.array([c + sustain_clips <= num and bool(below[c:c + sustain_clips].all()) for c in range(num)])
    out[1:] = sustained[1:] & ~sustained[:-1]
    out[0] = sustained[0]
    return out


def any_dimension_events(matrix: np.ndarray, definition: str, direction: str, **kw: Any) -> np.ndarray:
    """Events of any dimension. matrix: [D, C] per-clip scores -> bool [C]."""
    return np.any([clip_events(row, definition, direction, **kw) for row in np.atleast_2d(matrix)], axis=0)


def batch_labels(events: np.ndarray, batch_clips: Sequence[Sequence[int]], lead_batches: int) -> np.ndarray:
    """Positive batches: an event clip overlaps batch b or one of the next `lead_batches` batches.
    events: bool [C]; batch_clips: per batch its clip indices (B lists) -> bool [B]."""
    hit = np.array([bool(np.any(events[list(clips)])) if clips else False for clips in batch_clips])
    return np.array([bool(hit[b:b + lead_batches + 1].any()) for b in range(len(hit))], dtype=bool)


# ---------------------------------------------------------------------------------------------- statistics
def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U / (n+ n-)).
    scores: [n] floats; labels: bool [n]. NaN when either class is empty."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return math.nan
    ranks = pd.Series(scores).rank(method="average").to_numpy()  # 1-based, ties averaged
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def within_group_auc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """AUC over (positive, negative) pairs of the SAME group only (a video): sum over groups of U_g / sum of
    n+_g n-_g, so a signal that only separates videos (e.g. one drifting video with large D throughout) scores 0.5.
    scores [n], labels bool [n], groups [n] -> float, NaN without any mixed group."""
    scores, labels, groups = np.asarray(scores, float), np.asarray(labels, bool), np.asarray(groups)
    u_sum = pairs = 0.0
    for g in pd.unique(groups):
        sel = groups == g
        pos, neg = int(labels[sel].sum()), int((~labels[sel]).sum())
        if pos and neg:
            u_sum += roc_auc(scores[sel], labels[sel]) * pos * neg
            pairs += pos * neg
    return u_sum / pairs if pairs else math.nan


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate [k], true positive rate [k]) from the highest threshold down, starting at (0, 0)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def precision_recall(fired: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of firings vs positive batches. fired, labels: bool [n]; NaN where undefined."""
    fired, labels = np.asarray(fired, bool), np.asarray(labels, bool)
    hits = int((fired & labels).sum())
    return (hits / fired.sum() if fired.any() else math.nan, hits / labels.sum() if labels.any() else math.nan)


def permutation_test(fired: np.ndarray, labels: np.ndarray, groups: np.ndarray, permutations: int,
                     rng: np.random.Generator) -> dict[str, float]:
    """Firings placed at random within each group (the same count per group, uniform over its n_g rows), repeated
    `permutations` times. fired, labels: bool [n]; groups: [n].

    Returns mean precision and recall of the random placements and the one-sided p-value
    (1 + #{random hits >= observed hits}) / (1 + permutations) (precision and recall are both hits over a fixed
    count, so one p-value serves both). NaN without firings, positives or permutations."""
    fired, labels, groups = np.asarray(fired, bool), np.asarray(labels, bool), np.asarray(groups)
    observed = int((fired & labels).sum())
    total_fired, total_pos = int(fired.sum()), int(labels.sum())
    if permutations < 1 or total_fired == 0 or total_pos == 0:  # nothing to place, or nothing to hit
        return {"perm_precision": math.nan, "perm_recall": math.nan, "p_value": math.nan}
    hits = np.zeros(permutations, dtype=np.int64)
    for g in pd.unique(groups):
        sel = np.flatnonzero(groups == g)
        k = int(fired[sel].sum())
        if k == 0:
            continue
        keys = rng.random((permutations, sel.size))  # [P, n_g]: a uniform k-subset per permutation
        chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]  # [P, k]
        hits += labels[sel][chosen].sum(axis=1)
    return {"perm_precision": float(hits.mean() / total_fired),
            "perm_recall": float(hits.mean() / total_pos) if total_pos else math.nan,
            "p_value": float((1 + (hits >= observed).sum()) / (1 + permutations))}


def bootstrap_mean_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator,
                      ci: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap CI of the mean of `values` [n] (resampled with replacement)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if n_boot < 1 or values.size < 2:
        return mean, math.nan, math.nan
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    return mean, float(np.quantile(means, (1 - ci) / 2)), float(np.quantile(means, (1 + ci) / 2))


# ---------------------------------------------------------------------------------------------- one run
def clip_matrix(scores: pd.DataFrame, video: str, dimensions: Sequence[str], num_clips: int) -> np.ndarray:
    """Per-clip scores of one video as [D, C] (NaN where a clip or dimension was not scored)."""
    rows = scores[(scores["video"] == video) & (scores["clip"] >= 0) & scores["dimension"].isin(dimensions)]
    out = np.full((len(dimensions), num_clips), np.nan)
    index = {d: i for i, d in enumerate(dimensions)}
    for dim, clip, score in zip(rows["dimension"], rows["clip"], rows["score"]):
        if 0 <= int(clip) < num_clips:
            out[index[dim], int(clip)] = float(score)
    return out


def run_dimensions(run: RunData, cfg: DetectorConfig) -> list[str]:
    """The TinyWorld dimensions that define events for `run` (cfg.dimensions, else every one it scored)."""
    scored = sorted(set(run.scores.loc[run.scores["scorer"] == TINYWORLD_SCORER, "dimension"]))
    if cfg.dimensions is None:
        return scored
    missing = [d for d in cfg.dimensions if d not in scored]
    if missing:
        raise ValueError(f"report.detector.dimensions {missing} were not scored in {run.run_dir} (scored: {scored})")
    return list(cfg.dimensions)


def signal_columns(events: pd.DataFrame) -> list[str]:
    """Extra per-batch signals (`signal_<name>` columns: the replayed signals, or keys the events carry), in name
    order; their `_z` / `_fired` companions are not signals of their own."""
    return sorted(c for c in events.columns if str(c).startswith("signal_") and not str(c).endswith(("_z", "_fired")))


def replays_final_latents(run: RunData, cfg: DetectorConfig) -> bool:
    """Whether `report.detector.signals` are replayed on this run: signals are configured, the rule never pruned
    (`trim.enabled=false`) and its logged D_t is of the final latents (`trim.drift_source=final`). A first-step
    monitor's final latents are the same videos as the final-latent monitor's, whose rows already hold the replays,
    and its logged D_t is a different signal, so the replay's check against the log would fail by design."""
    trim = _dig(run.config or {}, "trim", {}) or {}
    return bool(cfg.signals) and not trim.get("enabled", True) and trim.get("drift_source", "final") == "final"


def replayed_signals(run: RunData, cfg: DetectorConfig, video: str, ev: pd.DataFrame) -> dict[str, np.ndarray]:
    """`report.detector.signals` replayed on the video's saved latents ({} when none are configured, the run pruned,
    its D_t is not of the final latents, or it saved no latents: `detector_tables` names the last three in its
    notes)."""
    from tokentrim.report.signals import load_latents, signal_config, video_signals

    if not replays_final_latents(run, cfg):
        return {}
    trim = dict(_dig(run.config or {}, "trim", {}) or {})
    latents = load_latents(run.run_dir, video)  # [F, C, H, W]
    if latents is None:
        return {}
    grid = next((g for g in ev["grid"] if isinstance(g, list) and len(g) == 2), None)
    if grid is None:
        raise ValueError(f"{run.run_dir}/events/{video}.jsonl has no token grid: the signals cannot be replayed")
    configs = {name: signal_config(trim, overrides or {}, name) for name, overrides in cfg.signals.items()}
    return video_signals(latents, ev["start_frame"].astype(int).tolist(), grid, configs)


def batch_frame(run: RunData, cfg: DetectorConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(batches, clips) of one run with TinyWorld scores.

    batches: one row per (video, batch t) with the signals `D`, `z` = (D - mu) / sigma (tested batches, sigma > 0),
    `t`, any `signal_*`, `tested`, `fired` (D > threshold on a tested batch), `clips` (the batch's clip indices), and
    a bool column `<definition>_<direction>` per label. clips: one row per (video, clip) with the mean score over the
    dimensions (`score`) and `first_batch_clip` unused. Raises ValueError when the run lacks what the mapping needs."""
    clip_seconds = _dig(run.config or {}, "scorer.clip_seconds")
    if clip_seconds is None:
        raise ValueError(f"{run.run_dir}/config.yaml has no scorer.clip_seconds: the batch -> clip mapping needs it")
    dims = run_dimensions(run, cfg)
    if "start_frame" not in run.events.columns:
        raise ValueError(f"{run.run_dir}/events have no start_frame: the batch -> latent frame mapping needs it")
    if "num_latent_frames" not in run.videos.columns:
        raise ValueError(f"{run.run_dir}/videos.csv has no num_latent_frames: the VAE's temporal stride needs it")
    ok = run.ok_videos.set_index("video")
    rows, clip_rows = [], []
    for video, ev in run.events[run.events["video"].isin(ok.index)].groupby("video", sort=True):
        ev = ev.sort_values("t")
        meta = ok.loc[video]
        layout = temporal_layout(ev["start_frame"].astype(int).tolist(), int(meta["num_latent_frames"]),
                                 int(meta["num_frames"]), float(meta["fps"]), float(clip_seconds))
        matrix = clip_matrix(run.scores, video, dims, len(layout.clip_spans))  # [D, C]
        clips_of = layout.batch_clips()
        labels = {}
        for definition in cfg.definitions:
            for direction in DIRECTIONS:
                events = any_dimension_events(matrix, definition, direction, threshold=cfg.threshold,
                                              reference_clips=cfg.reference_clips, sustain_clips=cfg.sustain_clips)
                labels[f"{definition}_{direction}"] = batch_labels(events, clips_of, cfg.lead_batches)
                labels[f"{definition}_{direction}_clips"] = int(events.sum())
        with np.errstate(all="ignore"):
            clip_scores = np.nanmean(matrix, axis=0) if np.isfinite(matrix).any() else np.full(matrix.shape[1], np.nan)
        clip_rows += [{"video": video, "clip": c, "score": float(s)} for c, s in enumerate(clip_scores)]
        tested = ev["is_tested"].fillna(False).astype(bool).to_numpy() if "is_tested" in ev else \
            ev["threshold"].notna().to_numpy()
        D, mu, sigma, thr = (ev[k].to_numpy(dtype=float) for k in ("D", "mu", "sigma", "threshold"))
        with np.errstate(all="ignore"):
            z = np.where(tested & (sigma > 0), (D - mu) / sigma, np.nan)
        extra = {c: ev[c].to_numpy(dtype=float) for c in signal_columns(ev)}
        extra.update(replayed_signals(run, cfg, video, ev))
        for b in range(len(ev)):
            row = {"video": video, "prompt": meta["prompt"], "seed": meta["seed"], "t": int(ev["t"].iloc[b]),
                   "D": D[b], "z": z[b], "tested": bool(tested[b]),
                   "fired": bool(tested[b] and np.isfinite(D[b]) and np.isfinite(thr[b]) and D[b] > thr[b]),
                   "clips": clips_of[b], **{k: v[b] for k, v in extra.items()}}
            row.update({k: (v[b] if isinstance(v, np.ndarray) else v) for k, v in labels.items()})
            rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(clip_rows)


def signal_names(batches: pd.DataFrame) -> dict[str, str]:
    """Column -> table name of every signal scored: raw D_t, the rule's statistic, the batch index (a reference
    that knows nothing of the video), and any `signal_*` the events carry."""
    names = {"D": "D_t (raw)", "z": "(D-mu)/sigma (rule)", "t": "batch index t (reference)"}
    names.update({c: c[len("signal_"):] for c in signal_columns(batches)})
    return names


def auc_rows(batches: pd.DataFrame, cfg: DetectorConfig) -> list[dict[str, Any]]:
    """One row per (definition, direction, signal): scored batches, positives, pooled and within-video AUC."""
    rows = []
    for definition in cfg.definitions:
        for direction in DIRECTIONS:
            label = f"{definition}_{direction}"
            for column, name in signal_names(batches).items():
                data = batches[np.isfinite(batches[column].to_numpy(dtype=float))]
                y = data[label].to_numpy(dtype=bool)
                s = data[column].to_numpy(dtype=float)
                rows.append({"definition": definition, "direction": direction, "signal": name, "batches": len(data),
                             "positives": int(y.sum()), "auc_pooled": roc_auc(s, y),
                             "auc_within_video": within_group_auc(s, y, data["video"].to_numpy())})
    return rows


def trigger_rows(batches: pd.DataFrame, cfg: DetectorConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One row per (definition, direction): the rule's firings on tested batches vs the permutation baseline."""
    tested = batches[batches["tested"]]
    rows = []
    for definition in cfg.definitions:
        for direction in DIRECTIONS:
            y = tested[f"{definition}_{direction}"].to_numpy(dtype=bool)
            fired = tested["fired"].to_numpy(dtype=bool)
            precision, recall = precision_recall(fired, y)
            perm = permutation_test(fired, y, tested["video"].to_numpy(), cfg.permutations, rng)
            rows.append({"definition": definition, "direction": direction, "tested": len(tested),
                         "positives": int(y.sum()), "fired": int(fired.sum()), "precision": precision,
                         "recall": recall, **perm})
    return rows


def signal_rows(batches: pd.DataFrame, cfg: DetectorConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Signals side by side, one row per (definition, signal) for the drop labels: AUC of D (pooled, within video),
    AUC of its (D - mu) / sigma within video, its firings' precision vs the permutation baseline, and the
    within-video AUC of D against RISES (the noise floor). Signals: the run's logged D_t and each replayed one."""
    rows = []
    columns = {"D": ("z", "fired", "run D_t (logged)")}
    columns.update({c: (f"{c}_z", f"{c}_fired", c[len("signal_"):]) for c in signal_columns(batches)
                    if f"{c}_fired" in batches.columns})
    groups_all = batches["video"].to_numpy()
    for definition in cfg.definitions:
        y_all = batches[f"{definition}_drop"].to_numpy(dtype=bool)
        rise_all = batches[f"{definition}_rise"].to_numpy(dtype=bool)
        for d_col, (z_col, fired_col, name) in columns.items():
            d = batches[d_col].to_numpy(dtype=float)
            z = batches[z_col].to_numpy(dtype=float)
            has_d, has_z = np.isfinite(d), np.isfinite(z)
            tested = batches["tested"].to_numpy(dtype=bool)
            fired = batches[fired_col].to_numpy(dtype=bool) & tested
            precision, recall = precision_recall(fired[tested], y_all[tested])
            perm = permutation_test(fired[tested], y_all[tested], groups_all[tested], cfg.permutations, rng)
            rows.append({"definition": definition, "signal": name, "batches": int(has_d.sum()),
                         "positives": int(y_all[has_d].sum()), "auc_pooled": roc_auc(d[has_d], y_all[has_d]),
                         "auc_within_video": within_group_auc(d[has_d], y_all[has_d], groups_all[has_d]),
                         "z_auc_within_video": within_group_auc(z[has_z], y_all[has_z], groups_all[has_z]),
                         "fired": int(fired.sum()), "precision": precision, "recall": recall,
                         "perm_precision": perm["perm_precision"], "p_value": perm["p_value"],
                         "rise_auc_within_video": within_group_auc(d[has_d], rise_all[has_d], groups_all[has_d])})
    return rows


def effect_values(variant: tuple[pd.DataFrame, pd.DataFrame], baseline_clips: pd.DataFrame,
                  pairs: Mapping[str, str], effect_clips: int) -> np.ndarray:
    """Per triggered video, mean over the clips after its triggers of (variant - baseline) clip scores.

    variant: (batches, clips) of the pruning run; baseline_clips: the baseline's clips frame; pairs: variant video ->
    baseline video (same prompt and seed). The clips of a trigger at batch t: `effect_clips` clips from the first clip
    of batch t. -> [videos with a trigger and a paired baseline]."""
    batches, clips = variant
    v_scores = clips.set_index(["video", "clip"])["score"]
    b_scores = baseline_clips.set_index(["video", "clip"])["score"]
    out = []
    for video, rows in batches[batches["fired"]].groupby("video", sort=True):
        if video not in pairs:
            continue
        chosen = sorted({c for first in (min(cl) for cl in rows["clips"] if cl)
                         for c in range(first, first + effect_clips)})
        deltas = [v_scores.get((video, c), np.nan) - b_scores.get((pairs[video], c), np.nan) for c in chosen]
        deltas = [d for d in deltas if np.isfinite(d)]
        if deltas:
            out.append(float(np.mean(deltas)))
    return np.asarray(out, dtype=float)


# ---------------------------------------------------------------------------------------------- the report
@dataclasses.dataclass
class DetectorResult:
    """Tables of the detector report (one frame each) and the per-run batch frames behind them."""

    labels: pd.DataFrame
    auc: pd.DataFrame
    triggers: pd.DataFrame
    effect: pd.DataFrame
    signals: pd.DataFrame
    notes: list[str]
    batches: dict[tuple[str, str], pd.DataFrame]


def _seeded(cfg: DetectorConfig, *parts: str) -> np.random.Generator:
    """A generator per (seed, run, table) so a table does not change when another run joins the report."""
    import zlib

    return np.random.default_rng([cfg.seed, zlib.crc32("/".join(parts).encode())])


def has_tinyworld_scores(run: RunData) -> bool:
    return bool((run.scores["scorer"].astype(str) == TINYWORLD_SCORER).any()) and not run.events.empty


def detector_tables(runs: Sequence[RunData], cfg: DetectorConfig, *, baseline: str, n_boot: int,
                    ci: float = 0.95) -> DetectorResult:
    """Every number of the detector report for the runs scored with `scorer=tinyworld` (others are left out; a run
    whose layout cannot be derived is named in `notes`, not dropped silently)."""
    from tokentrim.report.aggregate import find_baseline

    labels, aucs, trig, eff, sig, notes = [], [], [], [], [], []
    frames: dict[tuple[str, str], tuple[pd.DataFrame, pd.DataFrame]] = {}
    for run in runs:
        if not has_tinyworld_scores(run):
            continue
        try:
            frames[(run.backbone, run.label)] = batch_frame(run, cfg)
        except ValueError as err:
            notes.append(f"{run.backbone} / {run.label}: skipped ({str(err).splitlines()[0]})")
            continue
        trim = _dig(run.config or {}, "trim", {}) or {}
        replays = replays_final_latents(run, cfg)
        if cfg.signals and not trim.get("enabled", True) and not replays:
            notes.append(f"{run.backbone} / {run.label}: trim.drift_source={trim.get('drift_source')}, so "
                         f"report.detector.signals (replays of the final latents) are not replayed here: they are "
                         f"in the final-latent monitor's rows")
        elif replays and not (run.run_dir / "latents").is_dir():
            notes.append(f"{run.backbone} / {run.label}: no saved latents (generate with save_latents=true), so "
                         f"report.detector.signals were not replayed")
    for (backbone, label), (batches, _) in frames.items():
        if batches.empty:
            notes.append(f"{backbone} / {label}: no batches with events")
            continue
        key = {"backbone": backbone, "run": label}
        for name in [n for n, o in cfg.signals.items() if not o and f"signal_{n}" in batches.columns]:
            gap = np.nanmax(np.abs(batches[f"signal_{name}"].to_numpy(float) - batches["D"].to_numpy(float)))
            if not gap <= 1e-3 * np.nanmax(np.abs(batches["D"].to_numpy(float))):  # the replay must match the log
                notes.append(f"{backbone} / {label}: the replayed signal {name!r} (no overrides) differs from the "
                             f"logged D_t by up to {gap:.3g}: the saved latents are not what the rule saw")
        for definition in cfg.definitions:
            row = dict(key, definition=definition, videos=batches["video"].nunique(), batches=len(batches))
            for direction in DIRECTIONS:
                per_video = batches.groupby("video")[f"{definition}_{direction}_clips"].first()
                row[f"{direction}_clips"] = int(per_video.sum())
                row[f"videos_with_{direction}"] = int((per_video > 0).sum())
                row[f"{direction}_batch_rate"] = float(batches[f"{definition}_{direction}"].mean())
            labels.append(row)
        aucs += [dict(key, **r) for r in auc_rows(batches, cfg)]
        trig += [dict(key, **r) for r in trigger_rows(batches, cfg, _seeded(cfg, backbone, label, "perm"))]
        if any(f"{c}_fired" in batches.columns for c in signal_columns(batches)):
            sig += [dict(key, **r) for r in signal_rows(batches, cfg, _seeded(cfg, backbone, label, "signals"))]
    for (backbone, label), variant in frames.items():
        base = find_baseline(runs, backbone, baseline)
        if base is None or base.label == label or (backbone, base.label) not in frames or not variant[0]["fired"].any():
            continue
        base_batches, base_clips = frames[(backbone, base.label)]
        by_key = {(p, s): v for v, p, s in base.ok_videos[["video", "prompt", "seed"]].itertuples(index=False)}
        pairs = {v: by_key[(p, s)] for v, p, s in variant[0][["video", "prompt", "seed"]].drop_duplicates()
                 .itertuples(index=False) if (p, s) in by_key}
        values = effect_values(variant, base_clips, pairs, cfg.effect_clips)
        mean, lo, hi = bootstrap_mean_ci(values, n_boot, _seeded(cfg, backbone, label, "effect"), ci)
        eff.append({"backbone": backbone, "run": label, "baseline": base.label, "triggered_videos": len(values),
                    "effect_clips": cfg.effect_clips, "delta": mean, "ci_lo": lo, "ci_hi": hi})
    return DetectorResult(pd.DataFrame(labels), pd.DataFrame(aucs), pd.DataFrame(trig), pd.DataFrame(eff),
                          pd.DataFrame(sig), notes,
                          {k: v[0] for k, v in frames.items()})


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _md_table(frame: pd.DataFrame, columns: Sequence[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.to_dict("records"):
        lines.append("| " + " | ".join(_fmt(row[c]) for c, _ in columns) + " |")
    return lines


def detector_markdown(result: DetectorResult, cfg: DetectorConfig, *, n_boot: int, ci: float) -> str:
    """detector.md: the four tables with what each number means."""
    dims = "every scored TinyWorld dimension" if cfg.dimensions is None else ", ".join(cfg.dimensions)
    out = ["# Drift detector vs TinyWorld ground truth", "",
           f"Events from the per-clip metrics ({dims}; any dimension): **sustained** = a clip starts "
           f"{cfg.sustain_clips} clips more than {cfg.threshold} below the mean of the first {cfg.reference_clips} "
           f"clips; **step** = a clip more than {cfg.threshold} below the clip before. **rise** = the same upwards "
           f"(the noise floor). A batch is positive when an event clip overlaps its pixel frames or those of the next "
           f"{cfg.lead_batches} batch(es); batch -> pixel frames -> clips from each run's temporal layout (events' "
           f"start_frame, VAE stride from videos.csv, scorer.clip_seconds).", ""]
    out += [f"- {n}" for n in result.notes] + ([""] if result.notes else [])
    if result.labels.empty:
        return "\n".join(out + ["No run scored with scorer=tinyworld has events.", ""])
    out += ["**Table D1.** Ground-truth events per run: event clips (summed over videos), videos with at least one, "
            "and the fraction of batches labelled positive.", ""]
    out += _md_table(result.labels, [("backbone", "backbone"), ("run", "run"), ("definition", "definition"),
                                     ("videos", "videos"), ("batches", "batches"), ("drop_clips", "drop clips"),
                                     ("videos_with_drop", "videos with a drop"), ("drop_batch_rate", "drop-positive batches"),
                                     ("rise_clips", "rise clips"), ("videos_with_rise", "videos with a rise"),
                                     ("rise_batch_rate", "rise-positive batches")])
    out += ["", "**Table D2.** ROC AUC of each per-batch signal (0.5 = chance). Pooled: over all batches of all "
            "videos; within video: only (positive, negative) pairs of the same video. D_t and the batch index: "
            "batches t >= 2; the rule's statistic: tested batches with sigma > 0.", ""]
    out += _md_table(result.auc, [("backbone", "backbone"), ("run", "run"), ("definition", "definition"),
                                  ("direction", "direction"), ("signal", "signal"), ("batches", "batches"),
                                  ("positives", "positives"), ("auc_pooled", "AUC pooled"),
                                  ("auc_within_video", "AUC within video")])
    out += ["", f"**Table D3.** The rule's firings (D_t > mu + lam sigma on tested batches: the triggers of a pruning "
            f"run; for the baseline, where it would have triggered) vs the same number per video placed at random "
            f"among that video's tested batches ({cfg.permutations} permutations, seed {cfg.seed}); p = one-sided "
            f"P(random hits >= observed).", ""]
    out += _md_table(result.triggers, [("backbone", "backbone"), ("run", "run"), ("definition", "definition"),
                                       ("direction", "direction"), ("tested", "tested"), ("positives", "positives"),
                                       ("fired", "fired"), ("precision", "precision"),
                                       ("perm_precision", "random precision"), ("recall", "recall"),
                                       ("perm_recall", "random recall"), ("p_value", "p")])
    if not result.effect.empty:
        out += ["", f"**Table D4.** Paired effect of pruning on the {cfg.effect_clips} clips from each trigger's first "
                f"clip: per triggered video the mean of (variant - baseline) clip scores (mean over the dimensions), "
                f"then the mean over videos with a {ci:.0%} bootstrap CI over videos (n_boot={n_boot}, seed "
                f"{cfg.seed}).", ""]
        frame = result.effect.copy()
        frame["ci"] = [f"[{_fmt(lo)}, {_fmt(hi)}]" for lo, hi in zip(frame["ci_lo"], frame["ci_hi"])]
        out += _md_table(frame, [("backbone", "backbone"), ("run", "run"), ("baseline", "vs"),
                                 ("triggered_videos", "triggered videos"), ("delta", "Δ score"), ("ci", "CI")])
    if not result.signals.empty:
        out += ["", f"**Table D5.** Drift signals side by side (monitor-only: the rule replayed on the run's saved "
                f"final latents with one knob changed, `report.detector.signals`; `run D_t` is the logged signal). "
                f"Drops; AUC of D_t pooled and within video, AUC of the rule's statistic (D-mu)/sigma within video, "
                f"the rule's would-be firings vs random placements ({cfg.permutations} permutations), and the "
                f"within-video AUC of D_t against RISES (the noise floor: a detector of noise fires on rises too). "
                f"dynamic_p has no row: it changes how many tokens a trigger prunes, not D_t nor the firing.", ""]
        out += _md_table(result.signals, [("backbone", "backbone"), ("run", "run"), ("definition", "definition"),
                                          ("signal", "signal"), ("batches", "batches"), ("positives", "positives"),
                                          ("auc_pooled", "AUC pooled"), ("auc_within_video", "AUC within"),
                                          ("z_auc_within_video", "(D-mu)/sigma AUC within"), ("fired", "fired"),
                                          ("precision", "precision"), ("perm_precision", "random precision"),
                                          ("p_value", "p"), ("rise_auc_within_video", "AUC within vs rises")])
    return "\n".join(out) + "\n"


def detector_csv(result: DetectorResult) -> str:
    """Every number in one long CSV (table, backbone, run, definition, direction, signal, and the table's columns)."""
    parts = [frame.assign(table=name) for name, frame in (("labels", result.labels), ("auc", result.auc),
                                                          ("triggers", result.triggers), ("effect", result.effect),
                                                          ("signals", result.signals))
             if not frame.empty]
    if not parts:
        return "table\n"
    frame = pd.concat(parts, ignore_index=True)
    first = [c for c in ("table", "backbone", "run", "definition", "direction", "signal") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]].to_csv(index=False)


def write_detector_report(runs: Sequence[RunData], out_dir: str | Path, cfg: DetectorConfig | Mapping[str, Any] | None,
                          *, baseline: str, n_boot: int, ci: float = 0.95, plots: bool = True) -> dict[str, Path]:
    """Write detector.md / detector.csv (+ plots/detector_roc_*.png) when any run has TinyWorld scores and events.
    Returns the written paths by name ({} when the detector report does not apply or is disabled)."""
    cfg = cfg if isinstance(cfg, DetectorConfig) else DetectorConfig(**dict(cfg or {}))
    if not cfg.enabled or not any(has_tinyworld_scores(r) for r in runs):
        return {}
    result = detector_tables(runs, cfg, baseline=baseline, n_boot=n_boot, ci=ci)
    out = Path(out_dir)
    paths = {"detector_md": write_text_atomic(out / "detector.md", detector_markdown(result, cfg, n_boot=n_boot, ci=ci)),
             "detector_csv": write_text_atomic(out / "detector.csv", detector_csv(result))}
    if plots:
        from tokentrim.report.plots import plot_detector_roc

        for (backbone, label), batches in result.batches.items():
            if batches.empty:
                continue
            slug = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in f"{backbone}_{label}")
            paths[f"detector_roc_{slug}"] = plot_detector_roc(
                batches, signal_names(batches), cfg.definitions, out / "plots" / f"detector_roc_{slug}.png",
                title=f"{backbone} / {label}: drift signals vs ground-truth drops (pooled)")
    return paths
