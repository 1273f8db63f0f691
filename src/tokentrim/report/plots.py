"""Report figures (matplotlib, Agg backend, PNG), each written atomically.

(a) `plot_drift_severity` / `plot_drift_overview`: drift severity D_t per batch t with the adaptive threshold
    mu_t + lambda * sigma_t (paper Sec. 3, trigger rule D_t > mu_t + lambda sigma_t), warm-up batches shaded, triggers
    marked; one video per figure, or small multiples of several videos.
(b) `plot_drift_heatmap`: the per-token drift d_i of one batch reshaped to the latent token grid [h, w]
    (token i of a frame is row-major over (h, w), brief "Shared conventions"), pruned tokens outlined.
(c) `plot_metric_vs_param`: a metric (default Final Score) against a swept parameter (p, lambda, warm-up) with CI bars.
(d) `plot_frame_strip`: baseline vs TokenTrim frames at the same seed and times, read through `tokentrim.video_io`.

Letters: t = batch index, N = tokens per latent frame, h x w = latent token grid (N = h * w), T = video frames.
"""

from __future__ import annotations

import logging
import math
import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tokentrim.report.atomic_io import atomic_path

logger = logging.getLogger(__name__)

DPI = 110
MAX_OVERVIEW_VIDEOS = 16


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def _draw_severity(ax: Any, events: pd.DataFrame, *, compact: bool = False) -> None:
    """D_t, threshold, warm-up shading and trigger markers of one video on `ax`."""
    t = events["t"].to_numpy(dtype=float)
    severity = events["D"].to_numpy(dtype=float)
    threshold = events["threshold"].to_numpy(dtype=float)
    warmup = events["is_warmup"].to_numpy(dtype=bool)
    triggered = events["triggered"].to_numpy(dtype=bool)
    for tw in t[warmup]:
        ax.axvspan(tw - 0.5, tw + 0.5, color="0.9", lw=0, zorder=0)
    ax.plot(t, severity, "o-", color="tab:blue", ms=3 if compact else 4, lw=1.2, label="$D_t$ (drift severity)")
    ax.step(t, threshold, where="mid", color="tab:orange", ls="--", lw=1.2, label=r"threshold $\mu_t+\lambda\sigma_t$")
    if triggered.any():
        ax.plot(t[triggered], severity[triggered], "x", color="tab:red", ms=9 if not compact else 6, mew=2,
                label="trigger (prune + regenerate)")
    if len(t):
        ax.set_xlim(t.min() - 0.6, t.max() + 0.6)


def plot_drift_severity(events: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> Path:
    """(a) D_t per batch with the threshold line and trigger markers for ONE video's events (one row per batch)."""
    if events.empty:
        raise ValueError(f"events for {path} are empty; nothing to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    _draw_severity(ax, events.sort_values("t"))
    ax.set_xlabel("batch t")
    ax.set_ylabel("drift severity $D_t$")
    num_trig = int(events["triggered"].sum())
    detail = f"{num_trig} trigger(s) in {len(events)} batches; grey = warm-up"
    ax.set_title(f"{title or events['video'].iloc[0]}\n{detail}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def plot_drift_overview(
    events: pd.DataFrame, path: str | os.PathLike, *, title: str = "", max_videos: int = MAX_OVERVIEW_VIDEOS
) -> Path:
    """(a) Small multiples of D_t vs t for up to `max_videos` videos (the ones with most triggers first)."""
    if events.empty:
        raise ValueError(f"events for {path} are empty; nothing to plot")
    order = events.groupby("video")["triggered"].sum().sort_values(ascending=False, kind="stable")
    videos = list(order.index[:max_videos])
    cols = min(4, len(videos))
    rows = math.ceil(len(videos) / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.4 * rows + 0.6), squeeze=False)
    for ax, video in zip(axes.flat, videos):
        _draw_severity(ax, events[events["video"] == video].sort_values("t"), compact=True)
        ax.set_title(_shorten(video, 38), fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(videos):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("batch t", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("$D_t$", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title or f"Drift severity per batch ({len(videos)} videos; grey = warm-up)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return _save(fig, path)


def token_grid(num_tokens: int, grid: Sequence[int] | None = None) -> tuple[int, int]:
    """(h, w) with h * w == num_tokens: `grid` if given, else the most square factorisation (h <= w)."""
    if grid is not None:
        h, w = int(grid[0]), int(grid[1])
        if h * w != num_tokens:
            raise ValueError(f"grid {[h, w]} has {h * w} cells but the drift vector has {num_tokens} tokens")
        return h, w
    h = int(math.isqrt(num_tokens))
    while h > 1 and num_tokens % h:
        h -= 1
    if h == 1 and num_tokens > 3:
        logger.warning("drift vector of %d tokens has no near-square grid; drawing 1 x %d", num_tokens, num_tokens)
    return h, num_tokens // h


def drift_grid_image(drift: Sequence[float], grid: Sequence[int] | None = None) -> np.ndarray:
    """[N] per-token drift -> [h, w] image; token i sits at row i // w, column i % w (row-major, as the DiT patchifies)."""
    values = np.asarray(drift, dtype=float)  # [N]
    h, w = token_grid(values.size, grid)
    return values.reshape(h, w)  # [N] -> [h, w]


def plot_drift_heatmap(
    drift: Sequence[float],
    path: str | os.PathLike,
    *,
    grid: Sequence[int] | None = None,
    pruned_indices: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """(b) Per-token drift d_i of one batch as an [h, w] heatmap; pruned tokens outlined.

    Args:
        drift: [N] per-token drift (N = h * w).
        grid: (h, w) latent token grid; default: most square factorisation of N.
        pruned_indices: token indices (0..N-1, row-major over (h, w)) pruned at this batch.
    """
    image = drift_grid_image(drift, grid)  # [h, w]
    h, w = image.shape
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, min(10.0, 0.1 * w + 3.5)), max(3.8, min(8.0, 0.1 * h + 2.6))))
    im = ax.imshow(image, cmap="magma", interpolation="nearest", aspect="equal")
    fig.colorbar(im, ax=ax, label="per-token drift $d_i$", shrink=0.9)
    num_pruned = 0
    if pruned_indices is not None and len(pruned_indices):
        idx = np.unique(np.asarray(pruned_indices, dtype=int) % (h * w))  # cache positions f*N+i -> token i
        num_pruned = idx.size
        rows, cols = np.divmod(idx, w)  # token i -> (row, column) of the [h, w] grid
        ax.scatter(cols, rows, s=max(8.0, 1500.0 / max(h, w)), marker="s", facecolors="none", edgecolors="cyan",
                   linewidths=1.0)
    ax.set_xlabel(f"token column (w = {w})")
    ax.set_ylabel(f"token row (h = {h})")
    subtitle = f"{h}×{w} token grid; cyan squares: {num_pruned} pruned token(s)"
    ax.set_title(textwrap.fill(title or "Per-token drift at trigger", 70) + "\n" + subtitle, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_vs_param(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    param: str,
    metric: str = "final",
    param_label: str | None = None,
    metric_label: str | None = None,
    baseline_value: float | None = None,
    ci_columns: tuple[str, str] | None = None,
    title: str = "",
) -> Path:
    """(c) `metric` against swept `param` with CI error bars, one line per backbone.

    Args:
        frame: columns `param`, `metric`, the CI columns and optionally `backbone`.
        baseline_value: drawn as a dashed horizontal line (e.g. the baseline's Final Score, or 0 for a delta).
        ci_columns: (low, high) column names; default (`<metric>_ci_lo`, `<metric>_ci_hi`).
    """
    lo_col, hi_col = ci_columns or (f"{metric}_ci_lo", f"{metric}_ci_hi")
    missing = [c for c in (param, metric) if c not in frame.columns]
    if missing:
        raise ValueError(f"plot_metric_vs_param needs columns {missing}; frame has {list(frame.columns)}")
    data = frame.dropna(subset=[param]).copy()
    if data.empty:
        raise ValueError(f"no rows with a value for {param!r}; nothing to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    groups = data.groupby("backbone") if "backbone" in data.columns else [("", data)]
    for backbone, part in groups:
        part = part.sort_values(param)
        x = part[param].to_numpy(dtype=float)
        y = part[metric].to_numpy(dtype=float)
        lo = part.get(lo_col, pd.Series(np.nan, index=part.index)).to_numpy(dtype=float)
        hi = part.get(hi_col, pd.Series(np.nan, index=part.index)).to_numpy(dtype=float)
        err = np.vstack([np.where(np.isfinite(lo), y - lo, 0.0), np.where(np.isfinite(hi), hi - y, 0.0)])  # [2, K]
        ax.errorbar(x, y, yerr=err, fmt="o-", capsize=4, lw=1.5, label=str(backbone) or None)
    if baseline_value is not None and math.isfinite(baseline_value):
        ax.axhline(baseline_value, color="0.4", ls="--", lw=1, label="baseline")
    ax.set_xlabel(param_label or param)
    ax.set_ylabel(metric_label or metric)
    ax.set_title(title or f"{metric_label or metric} vs {param_label or param} (bars: CI)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _default_reader() -> Callable[[str | os.PathLike], tuple[np.ndarray, float]]:
    from tokentrim.video_io import read_video

    return read_video


def plot_frame_strip(
    baseline_video: str | os.PathLike,
    variant_video: str | os.PathLike,
    path: str | os.PathLike,
    *,
    num_times: int = 6,
    times_s: Sequence[float] | None = None,
    labels: tuple[str, str] = ("baseline", "TokenTrim"),
    title: str = "",
    read_video: Callable[[str | os.PathLike], tuple[np.ndarray, float]] | None = None,
) -> Path:
    """(d) Two rows of frames, baseline over variant, at the same times (same seed: the files share a name).

    Args:
        times_s: times in seconds; default `num_times` evenly spaced over the shorter video (first and last included).
        read_video: `path -> (frames [T, H, W, 3] uint8, fps)`; default `tokentrim.video_io.read_video`.
    """
    reader = read_video or _default_reader()
    videos = []
    for video_path in (baseline_video, variant_video):
        if not Path(video_path).is_file():
            raise FileNotFoundError(f"frame strip needs {video_path}, which does not exist")
        videos.append(reader(video_path))
    (frames_a, fps_a), (frames_b, fps_b) = videos
    duration = min(len(frames_a) / fps_a, len(frames_b) / fps_b)
    if times_s is None:
        last = max(0.0, duration - 1.0 / max(fps_a, fps_b))
        times_s = list(np.linspace(0.0, last, num_times)) if num_times > 1 else [0.0]
    times = [float(t) for t in times_s]
    plt = _pyplot()
    height, width = frames_a.shape[1:3]
    cell_w = 2.2
    fig, axes = plt.subplots(2, len(times), figsize=(cell_w * len(times), 2 * cell_w * height / width + 0.9),
                             squeeze=False)
    for row, ((frames, fps), label) in enumerate(zip(videos, labels)):
        for col, t in enumerate(times):
            index = min(len(frames) - 1, int(round(t * fps)))
            ax = axes[row, col]
            ax.imshow(frames[index])  # [H, W, 3] uint8 RGB
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t = {t:.2f} s", fontsize=8)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title or f"{labels[0]} vs {labels[1]}, same prompt and seed", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_detector_roc(batches: pd.DataFrame, signals: dict[str, str], definitions: Sequence[str],
                      path: str | os.PathLike, *, title: str = "") -> Path:
    """ROC curves of each per-batch signal against the drop labels of each definition (one panel per definition),
    with the rise labels of the raw D_t dashed as the noise floor. batches: `report.detector.batch_frame` rows."""
    from tokentrim.report.detector import roc_auc, roc_curve

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(definitions), figsize=(4.6 * len(definitions), 4.4), squeeze=False)
    for ax, definition in zip(axes[0], definitions):
        for column, name in signals.items():
            data = batches[np.isfinite(batches[column].to_numpy(dtype=float))]
            y, s = data[f"{definition}_drop"].to_numpy(dtype=bool), data[column].to_numpy(dtype=float)
            if y.any() and (~y).any():
                fpr, tpr = roc_curve(s, y)
                ax.plot(fpr, tpr, label=f"{name}: {roc_auc(s, y):.2f}")
        data = batches[np.isfinite(batches["D"].to_numpy(dtype=float))]
        y = data[f"{definition}_rise"].to_numpy(dtype=bool)
        if y.any() and (~y).any():
            fpr, tpr = roc_curve(data["D"].to_numpy(dtype=float), y)
            ax.plot(fpr, tpr, ls="--", color="grey", label=f"D_t vs rises: {roc_auc(data['D'], y):.2f}")
        ax.plot([0, 1], [0, 1], color="black", lw=0.6)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{definition} drops",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="lower right", title="AUC", title_fontsize=7)
    fig.suptitle(_shorten(title, 110), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
