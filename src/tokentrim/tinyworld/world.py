"""TinyWorld: a procedural video world with exact ground truth, rendered by torch.

A scene is what a prompt says (:class:`Scene`: a background and 1-3 objects, each with shape, colour, size and
motion type). A :class:`Layout` holds what the prompt does not say (start positions, speeds, orbit radii and
phases); it is drawn from an explicit ``torch.Generator`` so every video is deterministic from its seed.

Motion is written in closed form as a function of continuous time ``t = frame / fps`` (wall bounces are a
triangle wave, orbits are ``cos``/``sin``), so a video of any length has a well-defined ground truth at every
frame and the same scene at another ``fps`` samples the same continuous world.

Units: lengths are in units of ``s = min(H, W)`` pixels ("frame units"), speeds in frame units per second, so a
scene looks the same at any resolution.

Shape letters used below: B batch (scenes), T frames, H height, W width, O objects, C=3 colour channels.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

# Object colours are bright and saturated (max channel >= 0.95); pairwise RGB distance >= 0.75, so a nearest-colour
# detector separates them with a wide margin.
OBJECT_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.15, 0.15),
    "green": (0.15, 0.90, 0.20),
    "blue": (0.20, 0.35, 1.00),
    "yellow": (0.95, 0.90, 0.15),
    "magenta": (0.95, 0.20, 0.90),
    "cyan": (0.15, 0.90, 0.95),
    "white": (0.95, 0.95, 0.95),
}
# Background colours are dark (max channel <= 0.32), so "brightness > 0.55" separates objects from any background.
BACKGROUND_COLOURS: dict[str, tuple[float, float, float]] = {
    "grey": (0.25, 0.25, 0.25),
    "dark blue": (0.05, 0.08, 0.32),
    "dark green": (0.05, 0.25, 0.08),
    "dark red": (0.30, 0.05, 0.05),
    "dark purple": (0.20, 0.05, 0.28),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Half-extent of an object (circle radius, half side of a square, ...) in frame units.
SIZES: dict[str, float] = {"small": 0.09, "medium": 0.12, "large": 0.16}
MOTIONS: tuple[str, ...] = ("static", "bounce_horizontal", "bounce_vertical", "bounce_diagonal", "orbit")
BACKGROUND_KINDS: tuple[str, ...] = ("solid", "gradient", "pan")

# Speed range of every moving object (frame units / s). Metrics check measured speeds against it.
SPEED_RANGE: tuple[float, float] = (0.25, 0.45)
# Orbit radius range (frame units); angular speed = speed / radius.
ORBIT_RADIUS_RANGE: tuple[float, float] = (0.12, 0.20)
# Diagonal bounces keep the velocity angle within [30, 60] degrees of the x axis, so both axes carry >= 37% of motion.
DIAGONAL_ANGLE_RANGE_DEG: tuple[float, float] = (30.0, 60.0)
# Gradient background: brightness falls linearly from 1.0 x colour (top) to (1 - depth) x colour (bottom).
GRADIENT_DEPTH: float = 0.65
# Panning background: vertical stripes, `PAN_CYCLES` periods across the width, brightness in [1 - 2a, 1] x colour,
# moving left by one stripe period every `PAN_PERIOD_S` seconds (slow: 4 px/s at 64 px wide).
PAN_CYCLES: int = 2
PAN_AMPLITUDE: float = 0.15
PAN_PERIOD_S: float = 8.0
# Margin between an object and the frame edge (frame units) so objects are always fully visible.
EDGE_MARGIN: float = 0.02


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """One object as a prompt names it."""

    shape: str = "circle"
    colour: str = "red"
    size: str = "medium"
    motion: str = "static"


@dataclasses.dataclass(frozen=True)
class BackgroundSpec:
    """The background as a prompt names it."""

    colour: str = "dark blue"
    kind: str = "solid"


@dataclasses.dataclass(frozen=True)
class Scene:
    """Ground truth of one prompt: a background and 1-3 objects with distinct colours (drawn largest first)."""

    background: BackgroundSpec
    objects: tuple[ObjectSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))  # accept a list, keep the scene hashable
        check_scene(self)


@dataclasses.dataclass(frozen=True)
class ObjectLayout:
    """Continuous parameters of one object, in frame units (x across, y down). Not named by the prompt.

    static / bounce: start centre (x0, y0) and velocity (vx, vy) per second;
    orbit: centre (x0, y0), radius, angular speed omega (rad/s, sign = direction) and start phase (rad).
    """

    x0: float
    y0: float
    vx: float = 0.0
    vy: float = 0.0
    radius: float = 0.0
    omega: float = 0.0
    phase: float = 0.0


@dataclasses.dataclass(frozen=True)
class Layout:
    """Continuous parameters of one scene: one :class:`ObjectLayout` per object, in the scene's order."""

    objects: tuple[ObjectLayout, ...]


def check_scene(scene: Scene) -> None:
    """Raise ValueError naming the field, the rule and the value if ``scene`` is outside the world."""
    bg = scene.background
    if bg.colour not in BACKGROUND_COLOURS:
        raise ValueError(f"background.colour must be one of {sorted(BACKGROUND_COLOURS)}, got {bg.colour!r}")
    if bg.kind not in BACKGROUND_KINDS:
        raise ValueError(f"background.kind must be one of {list(BACKGROUND_KINDS)}, got {bg.kind!r}")
    if not 1 <= len(scene.objects) <= 3:
        raise ValueError(f"scene.objects must hold 1 to 3 objects, got {len(scene.objects)}")
    for i, obj in enumerate(scene.objects):
        if obj.shape not in SHAPES:
            raise ValueError(f"objects[{i}].shape must be one of {list(SHAPES)}, got {obj.shape!r}")
        if obj.colour not in OBJECT_COLOURS:
            raise ValueError(f"objects[{i}].colour must be one of {list(OBJECT_COLOURS)}, got {obj.colour!r}")
        if obj.size not in SIZES:
            raise ValueError(f"objects[{i}].size must be one of {list(SIZES)}, got {obj.size!r}")
        if obj.motion not in MOTIONS:
            raise ValueError(f"objects[{i}].motion must be one of {list(MOTIONS)}, got {obj.motion!r}")
    colours = [obj.colour for obj in scene.objects]
    if len(set(colours)) != len(colours):
        raise ValueError(f"object colours must be distinct within a scene (the detector matches by colour), got {colours}")


def frame_aspect(height: int, width: int) -> tuple[float, float]:
    """Frame extent (width, height) in frame units, i.e. divided by s = min(H, W)."""
    s = min(height, width)
    return width / s, height / s


# ----------------------------------------------------------------------------------------------------------------
# Layout sampling
# ----------------------------------------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _sign(generator: torch.Generator) -> float:
    return 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0


def sample_layout(
    scene: Scene,
    generator: torch.Generator,
    *,
    aspect: tuple[float, float] = (1.0, 1.0),
    num_candidates: int = 8,
    horizon_s: float = 16.0,
) -> Layout:
    """Draw start positions, speeds and orbits for ``scene`` from ``generator`` (CPU generator; deterministic).

    Args:
        scene: the ground truth.
        generator: CPU ``torch.Generator``; consumed in a fixed order, so equal seeds give equal layouts.
        aspect: frame extent (width, height) in frame units, see :func:`frame_aspect`.
        num_candidates: layouts drawn; the one whose objects overlap least over ``horizon_s`` seconds is kept
            (objects may still pass over each other; the metrics skip frames where they touch).
        horizon_s: time span (seconds, sampled at 4 Hz) over which overlaps are counted.
    """
    candidates = [_sample_layout_once(scene, generator, aspect=aspect) for _ in range(num_candidates)]
    if len(scene.objects) == 1:
        return candidates[0]
    times_s = torch.arange(0.0, horizon_s, 0.25, dtype=torch.float64)  # [S]
    overlaps = [count_overlaps(scene, layout, times_s, aspect=aspect) for layout in candidates]
    return candidates[min(range(num_candidates), key=lambda i: overlaps[i])]


def count_overlaps(scene: Scene, layout: Layout, times_s: torch.Tensor, *, aspect: tuple[float, float]) -> int:
    """Number of (time, object pair) samples where two objects' bounding discs (plus margin) intersect."""
    centres = [object_centres(o, lo, times_s, aspect=aspect) for o, lo in zip(scene.objects, layout.objects)]  # O x [S, 2]
    total = 0
    for i in range(len(centres)):
        for j in range(i + 1, len(centres)):
            reach = SIZES[scene.objects[i].size] + SIZES[scene.objects[j].size] + 2 * EDGE_MARGIN
            total += int((torch.linalg.norm(centres[i] - centres[j], dim=-1) < reach).sum())
    return total


def _sample_layout_once(scene: Scene, generator: torch.Generator, *, aspect: tuple[float, float]) -> Layout:
    extent_x, extent_y = aspect
    layouts: list[ObjectLayout] = []
    for obj in scene.objects:
        r = SIZES[obj.size] + EDGE_MARGIN
        if obj.motion == "orbit":
            radius = _uniform(generator, *ORBIT_RADIUS_RANGE)
            speed = _uniform(generator, *SPEED_RANGE)
            x0 = _uniform(generator, r + radius, extent_x - r - radius)
            y0 = _uniform(generator, r + radius, extent_y - r - radius)
            omega = _sign(generator) * speed / radius
            phase = _uniform(generator, 0.0, 2 * math.pi)
            layouts.append(ObjectLayout(x0=x0, y0=y0, radius=radius, omega=omega, phase=phase))
            continue
        x0 = _uniform(generator, r, extent_x - r)
        y0 = _uniform(generator, r, extent_y - r)
        if obj.motion == "static":
            layouts.append(ObjectLayout(x0=x0, y0=y0))
            continue
        speed = _uniform(generator, *SPEED_RANGE)
        if obj.motion == "bounce_horizontal":
            vx, vy = _sign(generator) * speed, 0.0
        elif obj.motion == "bounce_vertical":
            vx, vy = 0.0, _sign(generator) * speed
        else:  # bounce_diagonal
            angle = math.radians(_uniform(generator, *DIAGONAL_ANGLE_RANGE_DEG))
            vx = _sign(generator) * speed * math.cos(angle)
            vy = _sign(generator) * speed * math.sin(angle)
        layouts.append(ObjectLayout(x0=x0, y0=y0, vx=vx, vy=vy))
    return Layout(objects=tuple(layouts))


# ----------------------------------------------------------------------------------------------------------------
# Trajectories (closed form in continuous time)
# ----------------------------------------------------------------------------------------------------------------


def reflect_into(p: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Fold an unbounded straight-line coordinate into [low, high] with mirror reflections (a triangle wave).

    This is exactly an elastic bounce between two walls, continuous and periodic for any t.
    """
    span = high - low
    if span <= 0:
        return torch.full_like(p, 0.5 * (low + high))
    u = torch.remainder(p - low, 2 * span)  # in [0, 2*span)
    return low + torch.where(u <= span, u, 2 * span - u)


def object_centres(
    obj: ObjectSpec, layout: ObjectLayout, times_s: torch.Tensor, *, aspect: tuple[float, float] = (1.0, 1.0)
) -> torch.Tensor:
    """Centre of the object's shape (frame units) at each time.

    Args:
        times_s: ``[T]`` float times in seconds.
    Returns:
        ``[T, 2]`` (x, y) in frame units.
    """
    extent_x, extent_y = aspect
    r = SIZES[obj.size] + EDGE_MARGIN
    if obj.motion == "static":
        x = torch.full_like(times_s, layout.x0)
        y = torch.full_like(times_s, layout.y0)
    elif obj.motion == "orbit":
        angle = layout.phase + layout.omega * times_s
        x = layout.x0 + layout.radius * torch.cos(angle)
        y = layout.y0 + layout.radius * torch.sin(angle)
    else:
        x = reflect_into(layout.x0 + layout.vx * times_s, r, extent_x - r)
        y = reflect_into(layout.y0 + layout.vy * times_s, r, extent_y - r)
    return torch.stack([x, y], dim=-1)  # [T, 2]


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def shape_signed_distance(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: float) -> torch.Tensor:
    """Signed distance (pixels, negative inside) of a shape of half-extent ``r`` pixels centred at the origin.

    ``dx``, ``dy`` are pixel offsets from the centre (y down); any matching shapes. Squares use the max-norm (exact
    inside and along edges; corners are slightly sharp, which a one-pixel ramp does not show). The triangle points up,
    base ``2r`` at ``y = +r``, apex at ``y = -r``.
    """
    if shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - r
    if shape == "diamond":
        return (dx.abs() + dy.abs() - r) / math.sqrt(2.0)
    if shape == "triangle":
        base = dy - r
        slant = (2.0 * dx.abs() - dy - r) / math.sqrt(5.0)  # edges from (0, -r) to (+-r, r), outward unit normals
        return torch.maximum(base, slant)
    raise ValueError(f"shape must be one of {list(SHAPES)}, got {shape!r}")


def coverage(signed_distance: torch.Tensor) -> torch.Tensor:
    """Pixel coverage from signed distance: a linear ramp over one pixel (box-filter anti-aliasing, cheap).

    Unlike a sigmoid the ramp is exactly 0 half a pixel outside the shape, so objects leave no halo on the background.
    """
    return (0.5 - signed_distance).clamp(0.0, 1.0)


def render_background(
    background: BackgroundSpec, times_s: torch.Tensor, *, height: int, width: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Background frames.

    Args:
        times_s: ``[T]`` times in seconds.
    Returns:
        ``[T, 3, H, W]`` float32 in [0, 1].
    """
    num_frames = times_s.shape[0]
    colour = torch.tensor(BACKGROUND_COLOURS[background.colour], device=device).view(1, 3, 1, 1)  # [1, 3, 1, 1]
    if background.kind == "solid":
        gain = torch.ones(num_frames, 1, height, width, device=device)  # [T, 1, H, W]
    elif background.kind == "gradient":
        y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height  # [H]
        ramp = 1.0 - GRADIENT_DEPTH * y  # [H]
        gain = ramp.view(1, 1, height, 1).expand(num_frames, 1, height, width)  # [T, 1, H, W]
    elif background.kind == "pan":
        x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width  # [W]
        phase = pan_phase(times_s.to(device))  # [T]
        angle = 2 * math.pi * PAN_CYCLES * x.view(1, width) + phase.view(num_frames, 1)  # [T, W]
        stripes = 1.0 - PAN_AMPLITUDE + PAN_AMPLITUDE * torch.cos(angle)  # [T, W], in [1 - 2a, 1]
        gain = stripes.view(num_frames, 1, 1, width).expand(num_frames, 1, height, width)  # [T, 1, H, W]
    else:
        raise ValueError(f"background.kind must be one of {list(BACKGROUND_KINDS)}, got {background.kind!r}")
    return gain * colour  # [T, 3, H, W]


def pan_phase(times_s: torch.Tensor) -> torch.Tensor:
    """Stripe phase (rad) of the panning background at each time; increasing phase moves the stripes left."""
    return 2 * math.pi * times_s / PAN_PERIOD_S


def check_render_inputs(num_frames: int, height: int, width: int, fps: float, output: str) -> None:
    """Validate render arguments; raise ValueError naming the argument."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if height < 16 or width < 16:
        raise ValueError(f"height and width must be >= 16 pixels, got {height}x{width}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if output not in ("float", "uint8"):
        raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")


@torch.no_grad()
def render(
    scenes: Sequence[Scene],
    *,
    num_frames: int = 32,
    height: int = 64,
    width: int = 64,
    fps: float = 8.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    layouts: Sequence[Layout] | None = None,
    start_frame: int = 0,
    device: torch.device | str = "cpu",
    output: str = "float",
) -> torch.Tensor:
    """Render a batch of scenes.

    Args:
        scenes: ``B`` scenes.
        num_frames: ``T``, any length (motion is closed form and periodic).
        height, width: frame size in pixels (64x64 by default).
        fps: frames per second; frame ``i`` shows time ``(start_frame + i) / fps``.
        generator: CPU generator the layouts are drawn from, one scene after another. Used when ``layouts`` is None.
        seed: convenience for ``generator=torch.Generator().manual_seed(seed)``; give either, not both.
        layouts: explicit layouts (e.g. to re-render a scene with planted changes); overrides generator/seed.
        start_frame: first frame index, to render a long video in pieces that join exactly.
        device: where the pixels are computed.
        output: ``"float"`` -> float32 in [0, 1]; ``"uint8"`` -> uint8 in [0, 255] (rounded).

    Returns:
        ``[B, T, 3, H, W]`` RGB video (channels-first per frame, the layout a video model consumes). Use
        :func:`to_frames_thwc` for the ``[T, H, W, 3]`` uint8 layout of files and scorers.
    """
    check_render_inputs(num_frames, height, width, fps, output)
    aspect = frame_aspect(height, width)
    if layouts is None:
        if generator is not None and seed is not None:
            raise ValueError(f"give generator or seed, not both (seed={seed})")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        layouts = [sample_layout(scene, generator, aspect=aspect) for scene in scenes]
    if len(layouts) != len(scenes):
        raise ValueError(f"layouts must have one entry per scene ({len(scenes)}), got {len(layouts)}")

    s = float(min(height, width))  # pixels per frame unit
    times_s = (torch.arange(num_frames, dtype=torch.float64) + start_frame) / fps  # [T], float64 keeps long videos exact
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5  # [H] pixel centres
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5  # [W]
    videos = []
    for scene, layout in zip(scenes, layouts):
        frames = render_background(scene.background, times_s.float(), height=height, width=width, device=device)
        # Larger objects first, so a small object is never hidden behind a large one.
        order = sorted(range(len(scene.objects)), key=lambda i: -SIZES[scene.objects[i].size])
        for i in order:
            obj, obj_layout = scene.objects[i], layout.objects[i]
            centres = object_centres(obj, obj_layout, times_s, aspect=aspect).float().to(device) * s  # [T, 2] px
            dx = xs.view(1, 1, width) - centres[:, 0].view(num_frames, 1, 1)  # [T, 1, W]
            dy = ys.view(1, height, 1) - centres[:, 1].view(num_frames, 1, 1)  # [T, H, 1]
            dx, dy = torch.broadcast_tensors(dx, dy)  # [T, H, W]
            alpha = coverage(shape_signed_distance(obj.shape, dx, dy, SIZES[obj.size] * s)).unsqueeze(1)  # [T, 1, H, W]
            colour = torch.tensor(OBJECT_COLOURS[obj.colour], device=device).view(1, 3, 1, 1)  # [1, 3, 1, 1]
            frames = frames * (1.0 - alpha) + colour * alpha  # [T, 3, H, W]
        videos.append(frames)
    video = torch.stack(videos, dim=0)  # [B, T, 3, H, W]
    if output == "uint8":
        return (video * 255.0).round().clamp(0, 255).to(torch.uint8)
    return video


def to_frames_thwc(video: torch.Tensor) -> torch.Tensor:
    """One rendered video ``[T, 3, H, W]`` (float in [0, 1] or uint8) -> ``[T, H, W, 3]`` uint8 (file/scorer layout)."""
    if video.dtype != torch.uint8:
        video = (video * 255.0).round().clamp(0, 255).to(torch.uint8)
    return video.permute(0, 2, 3, 1).contiguous()  # [T, 3, H, W] -> [T, H, W, 3]
