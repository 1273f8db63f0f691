"""TinyWorld ground-truth metrics: clean renders score ~1, planted corruptions lower the right dimension."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tokentrim.tinyworld.metrics import DIMENSIONS, TinyWorldScorer, drift_onset, score_frames
from tokentrim.tinyworld.prompts import describe, parse, sample_scene
from tokentrim.tinyworld.world import BackgroundSpec, Scene, render, sample_layout, to_frames_thwc

FPS = 8.0
NUM_FRAMES = 64  # 8 s = four 2-s clips
PROMPT = (
    "a large red square bounces left and right over a dark blue background, "
    "a green triangle stays still, a yellow diamond bounces up and down"
)


def whole_video(rows):
    """{dimension: score} of the clip = -1 rows."""
    return {r["dimension"]: r["score"] for r in rows if r["clip"] == -1}


def per_clip(rows, dimension):
    return [r["score"] for r in rows if r["clip"] >= 0 and r["dimension"] == dimension]


def frames_of(scene, layout, num_frames=NUM_FRAMES, start_frame=0):
    """[T, H, W, 3] uint8 numpy of one scene rendered with a fixed layout."""
    video = render([scene], num_frames=num_frames, fps=FPS, layouts=[layout], start_frame=start_frame)
    return to_frames_thwc(video[0]).numpy()


@pytest.fixture(scope="module")
def clean():
    scene = parse(PROMPT)
    layout = sample_layout(scene, torch.Generator().manual_seed(0))
    frames = frames_of(scene, layout)
    return scene, layout, frames, whole_video(score_frames(frames, PROMPT, FPS))


# ------------------------------------------------------------------------------------------------------------------
# Planted corruptions (each keeps the prompt, breaks one property of the video)
# ------------------------------------------------------------------------------------------------------------------


def corrupt_colour_swap(scene, layout):
    """The red square is rendered blue (a colour the prompt does not name)."""
    objects = (dataclasses.replace(scene.objects[0], colour="blue"), *scene.objects[1:])
    return frames_of(dataclasses.replace(scene, objects=objects), layout)


def corrupt_vanish(scene, layout):
    """The green triangle disappears after 4 s (second half)."""
    half = NUM_FRAMES // 2
    kept = [0, 2]
    reduced = dataclasses.replace(scene, objects=tuple(scene.objects[i] for i in kept))
    reduced_layout = dataclasses.replace(layout, objects=tuple(layout.objects[i] for i in kept))
    first = frames_of(scene, layout, num_frames=half)
    second = frames_of(reduced, reduced_layout, num_frames=NUM_FRAMES - half, start_frame=half)
    return np.concatenate([first, second])  # [T, H, W, 3]


def corrupt_blur(frames, sigma_px=2.0):
    """Gaussian spatial blur of every frame."""
    radius = 4
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    video = torch.from_numpy(frames).float().permute(0, 3, 1, 2).reshape(-1, 1, *frames.shape[1:3])  # [T*3, 1, H, W]
    video = F.conv2d(F.pad(video, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    video = F.conv2d(F.pad(video, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    video = video.reshape(frames.shape[0], 3, *frames.shape[1:3]).permute(0, 2, 3, 1)  # [T, H, W, 3]
    return video.round().clamp(0, 255).to(torch.uint8).numpy()


def corrupt_smear(frames, window=4):
    """Temporal smear (motion blur): each frame is the mean of the last `window` frames."""
    video = torch.from_numpy(frames).float()  # [T, H, W, 3]
    padded = torch.cat([video[:1].expand(window - 1, -1, -1, -1), video])  # [T + w - 1, H, W, 3]
    smeared = padded.unfold(0, window, 1).mean(dim=-1)  # [T, H, W, 3, w] -> [T, H, W, 3]
    return smeared.round().clamp(0, 255).to(torch.uint8).numpy()


def corrupt_duplicate(frames, colour_rgb=(38, 230, 51), shift=(0, 24)):
    """A copy of the green triangle appears 24 px to the right (pasted wherever it lands)."""
    out = frames.copy()
    rgb = frames.astype(np.float32)
    is_object = np.linalg.norm(rgb - np.array(colour_rgb, np.float32), axis=-1) < 60  # [T, H, W]
    moved_mask = np.roll(is_object, shift, axis=(1, 2))
    moved_rgb = np.roll(frames, shift, axis=(1, 2))
    out[moved_mask] = moved_rgb[moved_mask]
    return out


def corrupt_background_shift(scene, layout):
    """After 4 s the background turns dark green."""
    half = NUM_FRAMES // 2
    shifted = dataclasses.replace(scene, background=BackgroundSpec(colour="dark green", kind="solid"))
    first = frames_of(scene, layout, num_frames=half)
    second = frames_of(shifted, layout, num_frames=NUM_FRAMES - half, start_frame=half)
    return np.concatenate([first, second])


# ------------------------------------------------------------------------------------------------------------------
# Clean renders
# ------------------------------------------------------------------------------------------------------------------


def test_clean_render_of_the_test_scene_scores_above_0_95_everywhere(clean):
    _, _, _, scores = clean
    assert set(scores) == set(DIMENSIONS)
    assert min(scores.values()) >= 0.95, scores


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_clean_random_scenes_score_above_0_95_on_every_dimension(seed):
    generator = torch.Generator().manual_seed(100 + seed)
    scene = sample_scene(generator, split="heldout" if seed % 2 else "train")
    num_frames = 240 if seed < 2 else NUM_FRAMES  # two long videos (30 s, 15 clips)
    video = render([scene], num_frames=num_frames, fps=FPS, generator=generator)
    scores = whole_video(score_frames(to_frames_thwc(video[0]).numpy(), describe(scene), FPS))
    assert min(scores.values()) >= 0.95, (describe(scene), scores)


def test_rows_have_one_score_per_clip_and_dimension_in_unit_range(clean):
    scene, _, frames, _ = clean
    rows = score_frames(frames, scene, FPS, clip_seconds=2.0)
    clips = sorted({r["clip"] for r in rows})
    assert clips == [-1, 0, 1, 2, 3]
    assert len(rows) == len(clips) * len(DIMENSIONS)
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert [r["start_frame"] for r in rows if r["clip"] >= 0][:: len(DIMENSIONS)] == [0, 16, 32, 48]


# ------------------------------------------------------------------------------------------------------------------
# Planted corruptions lower the right dimension
# ------------------------------------------------------------------------------------------------------------------


def test_colour_swap_lowers_colour_fidelity(clean):
    scene, layout, _, scores = clean
    corrupted = whole_video(score_frames(corrupt_colour_swap(scene, layout), PROMPT, FPS))
    assert corrupted["colour_fidelity"] <= 0.6 < scores["colour_fidelity"] - 0.3


def test_vanishing_object_lowers_object_count_in_the_clips_after_it(clean):
    scene, layout, _, _ = clean
    rows = score_frames(corrupt_vanish(scene, layout), PROMPT, FPS)
    counts = per_clip(rows, "object_count")
    assert min(counts[:2]) >= 0.95 and max(counts[2:]) <= 0.1


def test_spatial_blur_lowers_shape_persistence(clean):
    _, _, frames, scores = clean
    corrupted = whole_video(score_frames(corrupt_blur(frames), PROMPT, FPS))
    assert corrupted["shape_persistence"] <= 0.75 < scores["shape_persistence"] - 0.2


def test_temporal_smear_lowers_shape_persistence(clean):
    _, _, frames, scores = clean
    corrupted = whole_video(score_frames(corrupt_smear(frames), PROMPT, FPS))
    assert corrupted["shape_persistence"] <= 0.75 < scores["shape_persistence"] - 0.2


def test_duplicated_object_lowers_object_count(clean):
    _, _, frames, scores = clean
    corrupted = whole_video(score_frames(corrupt_duplicate(frames), PROMPT, FPS))
    assert corrupted["object_count"] <= 0.3 < scores["object_count"] - 0.6


def test_count_errors_name_extra_and_missing_objects(clean):
    """`count_errors` explains object_count: a clean render is all zeros, a duplicate is +1, a vanished object -1."""
    from tokentrim.tinyworld.metrics import TinyWorldScorer

    scene, layout, frames, _ = clean
    scorer = TinyWorldScorer()
    clean_errors = scorer.count_errors(frames, PROMPT)  # this scene's objects touch often: 12 scored frames
    assert set(clean_errors) == {0} and clean_errors[0] >= 10
    assert scorer.count_errors(corrupt_duplicate(frames), PROMPT) == {1: clean_errors[0]}
    vanished = scorer.count_errors(corrupt_vanish(scene, layout), PROMPT)
    assert set(vanished) == {-1, 0} and vanished[-1] > vanished[0]  # gone for the second half of the video


def test_background_shift_lowers_background_stability_after_the_shift(clean):
    scene, layout, _, _ = clean
    rows = score_frames(corrupt_background_shift(scene, layout), PROMPT, FPS)
    stability = per_clip(rows, "background_stability")
    assert min(stability[:2]) >= 0.95 and max(stability[2:]) <= 0.2


def test_static_object_that_drifts_lowers_trajectory():
    prompt = "a white square stays still over a grey background"
    moving = dataclasses.replace(parse(prompt).objects[0], motion="bounce_horizontal")
    scene = Scene(background=parse(prompt).background, objects=(moving,))
    video = render([scene], num_frames=NUM_FRAMES, fps=FPS, seed=0)
    scores = whole_video(score_frames(to_frames_thwc(video[0]).numpy(), prompt, FPS))
    assert scores["trajectory"] <= 0.1 and scores["shape_persistence"] >= 0.95


def test_frozen_pan_lowers_background_stability():
    prompt = "a white square stays still over a slowly panning dark red background"
    frames = render([parse(prompt)], num_frames=NUM_FRAMES, fps=FPS, seed=0)
    frozen = to_frames_thwc(frames[0, :1].expand(NUM_FRAMES, -1, -1, -1)).numpy()  # first frame repeated
    assert whole_video(score_frames(frozen, prompt, FPS))["background_stability"] <= 0.1


# ------------------------------------------------------------------------------------------------------------------
# Drift onset, files, configuration
# ------------------------------------------------------------------------------------------------------------------


def test_drift_onset_is_none_when_clean_and_the_first_bad_clip_otherwise(clean):
    scene, layout, frames, _ = clean
    scorer = TinyWorldScorer(onset_threshold=0.8)
    assert scorer.drift_onset(scorer.score_frames(frames, PROMPT, FPS)) is None
    rows = scorer.score_frames(corrupt_background_shift(scene, layout), PROMPT, FPS)
    assert scorer.drift_onset(rows) is None  # one low dimension of five keeps the clip mean above 0.8
    assert drift_onset(rows, threshold=0.9) == 2


def test_score_video_file_reads_an_mp4_and_scores_it_close_to_clean(clean, tmp_path):
    from tokentrim.video_io import write_video

    _, _, frames, _ = clean
    path = tmp_path / "clean.mp4"
    write_video(path, frames, FPS)
    scores = whole_video(TinyWorldScorer().score_video_file(path, PROMPT))
    assert min(scores.values()) >= 0.9, scores


def test_scorer_rejects_unknown_dimension():
    with pytest.raises(ValueError, match="temporal_flickering"):
        TinyWorldScorer(dimensions=("object_count", "temporal_flickering"))
