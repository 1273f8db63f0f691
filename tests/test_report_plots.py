"""Report figures are real, non-blank PNGs of the intended size, and show what they claim."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tokentrim.report import make_report, plots
from tokentrim.report.plots import DPI
from synthetic_runs import drift_events, synthetic_run_dir
from tokentrim.video_io import write_video

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _image(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=float)


def _events(**kwargs):
    rows = drift_events(np.random.default_rng(0), num_batches=8, spike_at=(6,), **kwargs)
    return pd.DataFrame([{"video": "a cat-0", **r} for r in rows]).astype({"D": float, "threshold": float})


def test_drift_severity_plot_is_nonblank_png_of_figure_size(tmp_path):
    path = plots.plot_drift_severity(_events(), tmp_path / "d.png")
    pixels = _image(path)
    assert pixels.shape[:2] == (round(3.6 * DPI), round(7.5 * DPI))
    assert pixels.std() > 10  # not a blank canvas


def test_heatmap_reshapes_drift_to_token_grid_and_marks_pruned(tmp_path):
    drift = np.zeros(6 * 10)
    drift[13] = 5.0  # row 1, column 3 of a 6 x 10 grid
    path = plots.plot_drift_heatmap(drift, tmp_path / "h.png", grid=(6, 10), pruned_indices=[13], title="x")
    assert _image(path).std() > 10
    image = plots.drift_grid_image(drift, grid=(6, 10))
    assert image.shape == (6, 10) and image[1, 3] == 5.0
    assert plots.token_grid(64) == (8, 8)
    assert plots.token_grid(60) == (6, 10)
    with pytest.raises(ValueError, match="grid"):
        plots.plot_drift_heatmap(drift, tmp_path / "bad.png", grid=(5, 10))


def test_metric_vs_param_plot_with_ci_bars(tmp_path):
    frame = pd.DataFrame({"backbone": ["sf"] * 3, "p": [0.05, 0.1, 0.2], "final": [0.80, 0.82, 0.75],
                          "final_ci_lo": [0.78, 0.80, 0.72], "final_ci_hi": [0.82, 0.84, 0.78]})
    path = plots.plot_metric_vs_param(frame, tmp_path / "s.png", param="p", baseline_value=0.79)
    assert _image(path).shape[:2] == (round(3.8 * DPI), round(6.0 * DPI))
    with pytest.raises(ValueError, match="needs columns"):
        plots.plot_metric_vs_param(frame, tmp_path / "s2.png", param="lambda")


def test_frame_strip_puts_baseline_frames_above_variant_frames(tmp_path):
    dark = np.full((8, 32, 48, 3), 20, dtype=np.uint8)  # [T, H, W, 3]
    bright = np.full((8, 32, 48, 3), 230, dtype=np.uint8)
    write_video(tmp_path / "base.mp4", dark, fps=8)
    write_video(tmp_path / "trim.mp4", bright, fps=8)
    path = plots.plot_frame_strip(tmp_path / "base.mp4", tmp_path / "trim.mp4", tmp_path / "f.png", num_times=4)
    pixels = _image(path).mean(axis=2)
    top, bottom = pixels[: pixels.shape[0] // 2], pixels[pixels.shape[0] // 2:]
    assert top.mean() < bottom.mean() - 30  # dark baseline row on top, bright TokenTrim row below


def test_make_report_writes_every_figure_kind(tmp_path):
    prompts = ("a red car", "a cat")
    synthetic_run_dir(tmp_path / "base", prompts=prompts, seeds=(0,), seed=1)
    for p in (0.05, 0.1):
        synthetic_run_dir(tmp_path / f"p{p}", trim="tokentrim", prompts=prompts, seeds=(0,),
                          config={"trim": {"top_p": p}}, seed=1)
    frames = np.random.default_rng(0).integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    for run in ("base", "p0.05", "p0.1"):
        for prompt in prompts:
            write_video(tmp_path / run / "videos" / f"{prompt}-0.mp4", frames, fps=8)
    result = make_report(tmp_path, n_boot=20, max_video_plots=1, max_heatmaps=1)
    names = {p.name for p in result.plots}
    assert {"final_vs_trim.top_p.png", "final_delta_vs_trim.top_p.png"} <= names
    assert any(n.startswith("drift_overview_") for n in names)
    assert any(n.startswith("heatmap_") for n in names)
    assert sum(n.startswith("frames_") for n in names) == 2  # one strip per non-baseline variant
    for path in result.plots:
        assert path.parent == tmp_path / "plots" and path.stat().st_size > 5000
