"""TinyWorld rendering: determinism, any length, continuous closed-form motion."""

import math

import pytest
import torch

from tokentrim.tinyworld.prompts import parse, sample_scene
from tokentrim.tinyworld.world import (
    SIZES,
    SPEED_RANGE,
    BackgroundSpec,
    ObjectSpec,
    Scene,
    object_centres,
    render,
    sample_layout,
    to_frames_thwc,
)

PROMPT = (
    "a red circle bounces left and right over a slowly panning dark blue background, "
    "a small green square stays still, a large yellow triangle moves in a circle"
)


def test_same_seed_gives_bit_identical_frames():
    scene = parse(PROMPT)
    first = render([scene], num_frames=24, seed=7)
    second = render([scene], num_frames=24, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_different_seeds_give_different_frames():
    scene = parse(PROMPT)
    assert not torch.equal(render([scene], num_frames=8, seed=0), render([scene], num_frames=8, seed=1))


def test_render_returns_batch_time_channel_height_width_in_unit_range():
    generator = torch.Generator().manual_seed(0)
    scenes = [sample_scene(generator) for _ in range(3)]
    video = render(scenes, num_frames=5, height=48, width=64, fps=8.0, seed=0)
    assert video.shape == (3, 5, 3, 48, 64) and video.dtype == torch.float32
    assert float(video.min()) >= 0.0 and float(video.max()) <= 1.0
    video_uint8 = render(scenes, num_frames=5, height=48, width=64, fps=8.0, seed=0, output="uint8")
    assert video_uint8.dtype == torch.uint8
    assert torch.equal(to_frames_thwc(video[0]), to_frames_thwc(video_uint8[0]))  # same rounding either way
    assert to_frames_thwc(video[0]).shape == (5, 48, 64, 3)


def test_500_frame_batch_renders():
    generator = torch.Generator().manual_seed(3)
    scenes = [sample_scene(generator, num_objects=3) for _ in range(2)]
    video = render(scenes, num_frames=500, seed=3, output="uint8")
    assert video.shape == (2, 500, 3, 64, 64)
    assert video[:, -1].float().std() > 0  # the last frame is a real picture, not padding


def test_long_video_rendered_in_pieces_joins_exactly():
    scene = parse(PROMPT)
    layouts = [sample_layout(scene, torch.Generator().manual_seed(5))]
    whole = render([scene], num_frames=40, layouts=layouts)
    pieces = torch.cat([render([scene], num_frames=20, layouts=layouts, start_frame=s) for s in (0, 20)], dim=1)
    assert torch.allclose(whole, pieces, atol=1e-6)


def test_same_world_at_double_fps_shows_the_same_frames_at_even_indices():
    scene = parse(PROMPT)
    layouts = [sample_layout(scene, torch.Generator().manual_seed(2))]
    slow = render([scene], num_frames=10, fps=8.0, layouts=layouts)
    fast = render([scene], num_frames=20, fps=16.0, layouts=layouts)
    assert torch.allclose(slow, fast[:, ::2], atol=1e-5)


@pytest.mark.parametrize("motion", ["bounce_horizontal", "bounce_vertical", "bounce_diagonal", "orbit"])
def test_motion_stays_continuous_and_inside_frame_for_an_hour(motion):
    obj = ObjectSpec(shape="circle", colour="red", size="large", motion=motion)
    scene = Scene(background=BackgroundSpec(), objects=(obj,))
    layout = sample_layout(scene, torch.Generator().manual_seed(11)).objects[0]
    times_s = torch.arange(0, 3600.0, 1.0 / 8.0, dtype=torch.float64)  # one hour at 8 fps
    centres = object_centres(obj, layout, times_s)  # [T, 2] frame units
    steps = torch.linalg.norm(centres.diff(dim=0), dim=1)  # [T-1]
    assert float(steps.max()) <= SPEED_RANGE[1] / 8.0 + 1e-9  # never jumps further than the speed allows
    assert float(steps.min()) > 0.0  # keeps moving (periodic, never stuck on a wall)
    half = SIZES["large"]
    assert float(centres.min()) >= half and float(centres.max()) <= 1.0 - half  # fully visible


def test_static_object_does_not_move():
    scene = parse("a blue square stays still over a grey background")
    video = render([scene], num_frames=30, seed=4)
    assert torch.equal(video[0, 0], video[0, -1])


def test_scene_rejects_repeated_colours_with_a_clear_message():
    obj = ObjectSpec(colour="red")
    with pytest.raises(ValueError, match="distinct"):
        Scene(background=BackgroundSpec(), objects=(obj, obj))


def test_render_rejects_zero_frames():
    with pytest.raises(ValueError, match="num_frames"):
        render([parse(PROMPT)], num_frames=0)


def test_triangle_area_matches_its_half_extent():
    scene = parse("a large white triangle stays still over a grey background")
    frame = render([scene], num_frames=1, height=128, width=128, seed=0)[0, 0]  # [3, H, W]
    covered = float((frame.amax(dim=0) > 0.6).sum())
    expected = 2.0 * (SIZES["large"] * 128) ** 2  # base 2r x height 2r / 2
    assert math.isclose(covered, expected, rel_tol=0.05)
