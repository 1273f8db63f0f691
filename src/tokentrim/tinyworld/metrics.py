"""Ground-truth metrics for TinyWorld videos (``scorer=tinyworld``), per VBench-Long clip.

A detector made for this world (bright saturated objects on dark backgrounds, see ``world.py``) finds objects by
colour segmentation and connected components; the prompt's :class:`~tokentrim.tinyworld.world.Scene` says what should
be seen. Every dimension is in [0, 1], 1 = perfect, and none needs the renderer's seed or phase, since a generated
video is not the renderer's:

- ``object_count``: fraction of frames whose number of detected objects equals the prompt's.
- ``colour_fidelity``: per detected object, closeness of its mean colour to the nearest colour the prompt names.
- ``shape_persistence``: fraction of frames where each prompted object (found by its colour) is classified as the
  prompt's shape (4th-order moments along axes and diagonals, vertical skewness) with the prompt's size, unsmeared.
- ``trajectory``: centroid-track statistics against the prompt's motion type: static objects stay put; bouncing objects
  move at the world's speed along the stated axis (or both axes); orbiting objects lie on a circle.
- ``background_stability``: agreement of non-object pixels with the prompt's background model (solid, gradient, or
  stripes whose phase is fitted per frame and must advance at the pan rate).

Frames where two objects touch (occlusion) are left out of count, colour, shape and trajectory statistics, since the
renderer's ground truth there is legitimately ambiguous. Clips follow the VBench-Long cut
(:func:`tokentrim.video_io.clip_spans`); a whole-video row (``clip = -1``) is the mean over clips.
VBench's ``temporal_flickering`` is added by the VBench adapter, not here.

Shape letters: T frames, H height, W width, P object palette colours, M (frame, colour) masks, K components.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from tokentrim.tinyworld.prompts import parse
from tokentrim.tinyworld.world import (
    BACKGROUND_COLOURS,
    GRADIENT_DEPTH,
    OBJECT_COLOURS,
    ORBIT_RADIUS_RANGE,
    PAN_AMPLITUDE,
    PAN_CYCLES,
    PAN_PERIOD_S,
    SIZES,
    SPEED_RANGE,
    ObjectSpec,
    Scene,
)

logger = logging.getLogger(__name__)

DIMENSIONS: tuple[str, ...] = (
    "object_count",
    "colour_fidelity",
    "shape_persistence",
    "trajectory",
    "background_stability",
)
PALETTE_NAMES: tuple[str, ...] = tuple(OBJECT_COLOURS)
PALETTE = torch.tensor([OBJECT_COLOURS[name] for name in PALETTE_NAMES])  # [P, 3]

# Shape prototypes: (kurtosis of the pixel offsets along the axes, along the diagonals, vertical skewness), the values
# of the ideal continuous shapes (checked on a 512 px raster). Moments use every pixel of a component, so they are far
# less sensitive than a bounding box to the 1-pixel tips that H.264 chroma subsampling erodes at 64 px.
# A uniform segment has kurtosis 1.8, a triangular one 2.4, a disc's projection 2.0; so a square is (1.8, 2.4), a
# diamond (its 45-degree rotation) is (2.4, 1.8), a disc is (2.0, 2.0); an apex-up triangle has skewness -2 sqrt(2)/5.
SHAPE_PROTOTYPES: dict[str, tuple[float, float, float]] = {
    "circle": (2.0, 2.0, 0.0),
    "square": (1.8, 2.4, 0.0),
    "triangle": (2.4, 2.4, -2.0 * math.sqrt(2.0) / 5.0),
    "diamond": (2.4, 1.8, 0.0),
}
# Ideal area of each shape in units of r^2 (r = half-extent).
SHAPE_AREA: dict[str, float] = {"circle": math.pi, "square": 4.0, "triangle": 2.0, "diamond": 2.0}


def clamp01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


# ----------------------------------------------------------------------------------------------------------------
# Detector
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Detections:
    """Connected components of each palette colour in each frame (numpy arrays of length K) and per-frame flags.

    Coordinates are pixel centres (x right, y down); boxes are inclusive pixel indices.
    """

    frame: np.ndarray  # [K] int frame index
    colour: np.ndarray  # [K] int palette index
    area: np.ndarray  # [K] float pixels
    cx: np.ndarray  # [K] centroid x (px)
    cy: np.ndarray  # [K] centroid y (px)
    x_min: np.ndarray  # [K]
    x_max: np.ndarray  # [K]
    y_min: np.ndarray  # [K]
    y_max: np.ndarray  # [K]
    mean_rgb: np.ndarray  # [K, 3] in [0, 1]
    kurtosis_axes: np.ndarray  # [K] mean kurtosis of the pixel offsets along x and y
    kurtosis_diagonals: np.ndarray  # [K] mean kurtosis along the two diagonals
    skew_y: np.ndarray  # [K] skewness of the vertical offsets (y down)
    occluded: np.ndarray  # [T] bool: two palette colours touch (within the occlusion margin)
    colour_occluded: np.ndarray  # [T, P] bool: this colour touches another one in this frame
    background_mask: np.ndarray  # [T, H, W] bool: pixels far from every bright pixel

    def select(self, keep: np.ndarray) -> Detections:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        per_component = {k: v[keep] for k, v in fields.items() if k not in PER_FRAME_FIELDS}
        return Detections(**per_component, **{k: fields[k] for k in PER_FRAME_FIELDS})


PER_FRAME_FIELDS: tuple[str, ...] = ("occluded", "colour_occluded", "background_mask")


def max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over the (2 radius + 1)^2 square neighbourhood of each pixel (pixels outside the frame are ignored).

    Separable (rows, then columns) in-place maxima of shifted slices; on CPU this is several times faster than
    ``F.max_pool2d`` on single-channel maps, and works for integer dtypes.

    Args:
        x: ``[..., H, W]``.
    """
    rows = x.clone()
    for shift in range(1, radius + 1):
        torch.maximum(rows[..., :, shift:], x[..., :, :-shift], out=rows[..., :, shift:])  # from the left
        torch.maximum(rows[..., :, :-shift], x[..., :, shift:], out=rows[..., :, :-shift])  # from the right
    out = rows.clone()
    for shift in range(1, radius + 1):
        torch.maximum(out[..., shift:, :], rows[..., :-shift, :], out=out[..., shift:, :])  # from above
        torch.maximum(out[..., :-shift, :], rows[..., shift:, :], out=out[..., :-shift, :])  # from below
    return out


def label_components(masks: torch.Tensor) -> torch.Tensor:
    """8-connected component labels by max-label propagation (pure torch, batched).

    Each map is cropped to the bounding box of its pixels (all crops share the largest box size), so the cost follows
    object size, not frame size. Each propagation pass moves a label one pixel, so a component settles after about
    its geodesic diameter in passes.

    Args:
        masks: ``[M, H, W]`` bool.
    Returns:
        ``[M, H, W]`` int32 labels: 0 off-mask, else the largest (linear pixel index + 1) in the pixel's component.
    """
    num_maps, height, width = masks.shape
    labels = torch.zeros(num_maps, height, width, dtype=torch.int32)
    if num_maps == 0:
        return labels
    rows_on, cols_on = masks.any(dim=2), masks.any(dim=1)  # [M, H], [M, W]
    y0 = rows_on.float().argmax(dim=1)  # [M] first occupied row
    y1 = height - 1 - rows_on.flip(1).float().argmax(dim=1)  # [M] last occupied row
    x0 = cols_on.float().argmax(dim=1)
    x1 = width - 1 - cols_on.flip(1).float().argmax(dim=1)
    crop_h, crop_w = int((y1 - y0).max()) + 1, int((x1 - x0).max()) + 1
    logger.debug("labelling %d maps on %dx%d crops", num_maps, crop_h, crop_w)
    rows = y0.view(-1, 1) + torch.arange(crop_h).view(1, -1)  # [M, h]
    cols = x0.view(-1, 1) + torch.arange(crop_w).view(1, -1)  # [M, w]
    inside = (rows < height).view(-1, crop_h, 1) & (cols < width).view(-1, 1, crop_w)  # [M, h, w]
    rows, cols = rows.clamp(max=height - 1), cols.clamp(max=width - 1)
    map_index = torch.arange(num_maps).view(-1, 1, 1)  # [M, 1, 1]
    on = masks[map_index, rows.view(-1, crop_h, 1), cols.view(-1, 1, crop_w)] & inside  # [M, H, W] -> [M, h, w]
    on = on.int()
    crop = (rows.view(-1, crop_h, 1) * width + cols.view(-1, 1, crop_w) + 1).int() * on  # [M, h, w] global index + 1
    for _ in range(crop_h * crop_w):
        previous = crop
        for _ in range(4):
            crop = max_filter(crop, 1) * on  # [M, h, w]
        if torch.equal(crop, previous):
            break
    m, i, j = torch.nonzero(on, as_tuple=True)  # on-mask crop pixels
    labels[m, rows[m, i], cols[m, j]] = crop[m, i, j]  # [M, h, w] -> [M, H, W]
    return labels


def detect(
    frames: torch.Tensor,
    *,
    fg_threshold: float = 0.55,
    colour_tolerance: float = 0.4,
    occlusion_margin_px: int = 2,
) -> Detections:
    """Segment a video into palette-colour components.

    Args:
        frames: ``[T, H, W, 3]`` float in [0, 1].
        fg_threshold: a pixel is bright (object) if its max channel exceeds this (backgrounds are <= 0.32,
            objects >= 0.95).
        colour_tolerance: a bright pixel joins its nearest palette colour if within this RGB distance (palette
            colours are >= 0.75 apart); farther pixels (blends at object overlaps) join nothing.
        occlusion_margin_px: two colours closer than this mark the frame as occluded; bright pixels' neighbourhood of
            this width is also excluded from the background.
    """
    num_frames, height, width, _ = frames.shape
    bright = frames.amax(dim=-1) > fg_threshold  # [T, H, W]
    bright_rgb = frames[bright]  # [N, 3] only bright pixels need a colour
    distance = torch.linalg.vector_norm(bright_rgb.unsqueeze(1) - PALETTE.unsqueeze(0), dim=-1)  # [N, P]
    nearest_distance, nearest_bright = distance.min(dim=-1)  # [N]
    nearest = torch.zeros(num_frames, height, width, dtype=torch.long)
    nearest[bright] = nearest_bright  # [N] -> [T, H, W]
    assigned = torch.zeros_like(bright)
    assigned[bright] = nearest_distance < colour_tolerance  # [T, H, W]
    # Only colours seen somewhere in the video get a mask (usually the 1-3 prompted ones).
    counts = torch.bincount(nearest[assigned], minlength=PALETTE.shape[0])  # [P]
    present = torch.nonzero(counts).squeeze(1)  # [P']
    num_colours = present.shape[0]
    class_masks = assigned.unsqueeze(1) & (nearest.unsqueeze(1) == present.view(1, -1, 1, 1))  # [T, P', H, W]

    # Occlusion: after dilation by the margin, two palette colours cover the same pixel.
    dilated = max_filter(class_masks.to(torch.uint8), occlusion_margin_px)  # [T, P', H, W]
    others = dilated.sum(dim=1, keepdim=True, dtype=torch.int32) - dilated  # [T, P', H, W] other colours nearby
    colour_occluded = torch.zeros(num_frames, PALETTE.shape[0], dtype=torch.bool)  # [T, P]
    colour_occluded[:, present] = (class_masks & (others > 0)).flatten(2).any(dim=2)  # [T, P', H*W] -> [T, P']
    occluded = colour_occluded.any(dim=1)  # [T]
    background_mask = max_filter(bright.to(torch.uint8), occlusion_margin_px) == 0  # [T, H, W]

    # Components of every non-empty (frame, colour) mask.
    flat_masks = class_masks.reshape(num_frames * num_colours, height, width)  # [T, P', H, W] -> [T*P', H, W]
    map_ids = torch.nonzero(flat_masks.flatten(1).any(dim=1)).squeeze(1)  # [M]
    labels = label_components(flat_masks[map_ids])  # [M, H, W]
    map_of_pixel, ys, xs = torch.nonzero(labels > 0, as_tuple=True)  # each [N] over labelled pixels
    pixel_labels = labels[map_of_pixel, ys, xs].long()  # [N]
    key = map_of_pixel * (height * width + 1) + pixel_labels  # [N] unique per (map, component)
    unique_keys, component_of_pixel = torch.unique(key, return_inverse=True)  # [K], [N]
    num_components = unique_keys.shape[0]
    flat_map = map_ids[unique_keys // (height * width + 1)]  # [K] index into T*P
    frame_of, colour_of = flat_map // num_colours, present[flat_map % num_colours]  # [K], [K] palette index

    def per_component_sum(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((num_components, *values.shape[1:]), dtype=torch.float64)
        return out.index_add_(0, component_of_pixel, values.double())

    def per_component_reduce(values: torch.Tensor, how: str, init: float) -> torch.Tensor:
        out = torch.full((num_components,), init, dtype=torch.float64)
        return out.scatter_reduce_(0, component_of_pixel, values.double(), reduce=how)

    area = per_component_sum(torch.ones_like(xs, dtype=torch.float64))  # [K]
    frame_of_pixel = map_ids[map_of_pixel] // num_colours  # [N]
    rgb = frames[frame_of_pixel, ys, xs]  # [N, 3]
    cx = per_component_sum(xs + 0.5) / area  # [K]
    cy = per_component_sum(ys + 0.5) / area  # [K]
    # Central moments for shape: pixel offsets from their component's centroid, along the axes and the diagonals.
    dx = (xs + 0.5).double() - cx[component_of_pixel]  # [N]
    dy = (ys + 0.5).double() - cy[component_of_pixel]  # [N]
    du, dv = (dx + dy) / math.sqrt(2.0), (dx - dy) / math.sqrt(2.0)  # [N] diagonal coordinates

    def kurtosis(d: torch.Tensor) -> torch.Tensor:
        return per_component_sum(d**4) * area / per_component_sum(d**2).clamp(min=1e-9) ** 2  # [K]

    skew_y = per_component_sum(dy**3) / area / (per_component_sum(dy**2) / area).clamp(min=1e-9) ** 1.5  # [K]
    return Detections(
        frame=frame_of.numpy(),
        colour=colour_of.numpy(),
        area=area.numpy(),
        cx=cx.numpy(),
        cy=cy.numpy(),
        x_min=per_component_reduce(xs, "amin", float(width)).numpy(),
        x_max=per_component_reduce(xs, "amax", -1.0).numpy(),
        y_min=per_component_reduce(ys, "amin", float(height)).numpy(),
        y_max=per_component_reduce(ys, "amax", -1.0).numpy(),
        mean_rgb=(per_component_sum(rgb) / area.unsqueeze(1)).numpy(),
        kurtosis_axes=(0.5 * (kurtosis(dx) + kurtosis(dy))).numpy(),
        kurtosis_diagonals=(0.5 * (kurtosis(du) + kurtosis(dv))).numpy(),
        skew_y=skew_y.numpy(),
        occluded=occluded.numpy(),
        colour_occluded=colour_occluded.numpy(),
        background_mask=background_mask.numpy(),
    )


def largest_per_frame(det: Detections, colour: int, num_frames: int) -> np.ndarray:
    """Index of the largest component of ``colour`` in each frame, -1 where there is none. Returns ``[T]``."""
    best = np.full(num_frames, -1, dtype=np.int64)
    candidates = np.nonzero(det.colour == colour)[0]
    order = candidates[np.argsort(det.area[candidates], kind="stable")]  # ascending area
    best[det.frame[order]] = order  # numpy assigns in order, so the largest component of each frame wins
    return best


# ----------------------------------------------------------------------------------------------------------------
# Per-clip dimensions
# ----------------------------------------------------------------------------------------------------------------


def scored_frames(det: Detections, start: int, end: int) -> np.ndarray:
    """Frame indices of [start, end) without occlusion; all of them if every frame is occluded."""
    frames = np.arange(start, end)
    clear = frames[~det.occluded[start:end]]
    return clear if clear.size else frames


def component_counts(det: Detections, frames: np.ndarray) -> np.ndarray:
    """Detected components in each of `frames`: [F] ints."""
    return np.bincount(det.frame, minlength=int(frames.max()) + 1)[frames]


def object_count_score(det: Detections, scene: Scene, frames: np.ndarray) -> float:
    """Fraction of frames whose detected component count equals the number of prompted objects."""
    return float(np.mean(component_counts(det, frames) == len(scene.objects)))


def colour_fidelity_score(
    det: Detections, scene: Scene, frames: np.ndarray, *, exact_distance: float = 0.12, zero_distance: float = 0.4
) -> float:
    """Area-weighted closeness of each detected component's mean colour to the nearest prompted colour.

    Distance <= ``exact_distance`` scores 1, >= ``zero_distance`` scores 0, linear between. Frames without any
    detection do not count (object_count sees them); a clip with no detection at all scores 0.
    """
    expected = np.array([OBJECT_COLOURS[o.colour] for o in scene.objects])  # [O, 3]
    in_clip = np.isin(det.frame, frames)
    if not in_clip.any():
        return 0.0
    rgb, area = det.mean_rgb[in_clip], det.area[in_clip]  # [k, 3], [k]
    distance = np.linalg.norm(rgb[:, None, :] - expected[None, :, :], axis=-1).min(axis=1)  # [k, O] -> [k]
    closeness = np.clip(1.0 - (distance - exact_distance) / (zero_distance - exact_distance), 0.0, 1.0)  # [k]
    return float(np.sum(closeness * area) / np.sum(area))


def shape_features(det: Detections, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moment features ``[k, 3]`` (see ``SHAPE_PROTOTYPES``) and bounding-box aspect (width / height) ``[k]``."""
    features = np.stack([det.kurtosis_axes[idx], det.kurtosis_diagonals[idx], det.skew_y[idx]], axis=-1)  # [k, 3]
    aspect = (det.x_max[idx] - det.x_min[idx] + 1.0) / (det.y_max[idx] - det.y_min[idx] + 1.0)  # [k]
    return features, aspect


def classify_shapes(features: np.ndarray) -> np.ndarray:
    """Nearest shape prototype (index into ``SHAPE_PROTOTYPES``) of each ``[k, 3]`` feature row."""
    protos = np.array(list(SHAPE_PROTOTYPES.values()))  # [S, 3]
    return np.linalg.norm(features[:, None, :] - protos[None, :, :], axis=-1).argmin(axis=1)  # [k, S] -> [k]


def object_observations(
    det: Detections, obj: ObjectSpec, frames: np.ndarray, *, min_clear: int, ignore_occlusion: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """Where a prompted object is seen clear of other objects: (frame indices ``[F]``, component indices ``[F]``).

    The object is its colour's largest component per frame. Returns None when the object is present in at least
    ``min_clear`` frames but touches other objects in too many of them to be judged (skip it); an object that is
    simply missing gives its few (possibly zero) clear sightings, which the caller scores as a failure.
    """
    colour = PALETTE_NAMES.index(obj.colour)
    best = largest_per_frame(det, colour, int(det.occluded.shape[0]))[frames]  # [F]
    present = best >= 0
    clear = present if ignore_occlusion else present & ~det.colour_occluded[frames, colour]
    if clear.sum() < min_clear and present.sum() >= min_clear:
        return None
    return frames[clear], best[clear]


def per_object_mean(scene: Scene, score_object) -> float:
    """Mean of ``score_object(obj, ignore_occlusion)`` over objects, skipping None (occluded); if every object is
    skipped, score them all again ignoring occlusion."""
    scores = [score_object(obj, False) for obj in scene.objects]
    kept = [x for x in scores if x is not None]
    if not kept:
        kept = [score_object(obj, True) for obj in scene.objects]
    return float(np.mean(kept))


def shape_persistence_score(
    det: Detections,
    scene: Scene,
    frames: np.ndarray,
    *,
    pixels_per_unit: float,
    max_aspect: float = 1.4,
    area_ratio_range: tuple[float, float] = (0.5, 2.0),
) -> float:
    """Mean over prompted objects of the fraction of clear sightings where its colour's largest component has its shape.

    A sighting counts as correct when the nearest moment prototype is the prompt's shape, the box aspect is within
    ``[1 / max_aspect, max_aspect]`` (smears stretch it) and the area is within ``area_ratio_range`` of the prompt
    size's ideal area. An object never seen in the clip scores 0 (object_count sees single missing frames).
    """
    shape_names = list(SHAPE_PROTOTYPES)

    def score_object(obj: ObjectSpec, ignore_occlusion: bool) -> float | None:
        observed = object_observations(det, obj, frames, min_clear=1, ignore_occlusion=ignore_occlusion)
        if observed is None:
            return None
        _, idx = observed
        if idx.size == 0:
            return 0.0
        features, aspect = shape_features(det, idx)
        is_shape = classify_shapes(features) == shape_names.index(obj.shape)
        is_compact = (aspect <= max_aspect) & (aspect >= 1.0 / max_aspect)
        ideal_area = SHAPE_AREA[obj.shape] * (SIZES[obj.size] * pixels_per_unit) ** 2
        ratio = det.area[idx] / ideal_area
        is_sized = (ratio >= area_ratio_range[0]) & (ratio <= area_ratio_range[1])
        return float(np.mean(is_shape & is_compact & is_sized))

    return per_object_mean(scene, score_object)


def speed_score(speed: float, *, low: float = SPEED_RANGE[0], high: float = SPEED_RANGE[1], slack: float = 0.3) -> float:
    """1 inside the world's speed range widened by ``slack`` (relative), falling linearly to 0 at 0 or 2x the top."""
    lo, hi = low * (1.0 - slack), high * (1.0 + slack)
    if speed < lo:
        return clamp01(speed / lo)
    if speed > hi:
        return clamp01(2.0 - speed / hi)
    return 1.0


def fit_circle(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Algebraic (Kasa) least-squares circle through ``[F, 2]`` points: (centre [2], radius, rms radial residual)."""
    x, y = points[:, 0], points[:, 1]
    design = np.stack([x, y, np.ones_like(x)], axis=1)  # [F, 3]
    target = x * x + y * y  # [F]
    (a, b, c), *_ = np.linalg.lstsq(design, target, rcond=None)
    centre = np.array([a / 2.0, b / 2.0])
    radius = float(np.sqrt(max(c + centre @ centre, 0.0)))
    residual = np.linalg.norm(points - centre, axis=1) - radius
    return centre, radius, float(np.sqrt(np.mean(residual**2)))


def motion_score(
    motion: str,
    times_s: np.ndarray,
    centres: np.ndarray,
    *,
    static_tolerance: float = 0.05,
    axis_share: float = 0.9,
    diagonal_share: float = 0.25,
    circle_tolerance: float = 0.25,
    circle_noise_floor: float = 0.01,
) -> float:
    """Score one object's centroid track against its motion type, in [0, 1] (the minimum over the type's checks).

    Args:
        motion: the prompt's motion type.
        times_s: ``[F]`` times of the frames where the object was seen (increasing).
        centres: ``[F, 2]`` centroids in frame units.
        static_tolerance: a static object's 90th-percentile distance from its median position that scores 0.
        axis_share: share of path length on the stated axis that scores 1 for horizontal/vertical bounces (0.5 -> 0).
        diagonal_share: share on the lesser axis that scores 1 for diagonal bounces (the world keeps >= 0.37).
        circle_tolerance: rms radial residual / radius that scores 0 for orbits.
        circle_noise_floor: rms radial residual (frame units) forgiven as centroid quantisation noise.
    """
    if motion == "static":
        deviation = np.linalg.norm(centres - np.median(centres, axis=0), axis=1)  # [F]
        return clamp01(1.0 - float(np.quantile(deviation, 0.9)) / static_tolerance)
    if times_s.size < 3:
        return 0.0
    steps = np.diff(centres, axis=0)  # [F-1, 2]
    speeds = np.linalg.norm(steps, axis=1) / np.diff(times_s)  # [F-1]
    checks = [speed_score(float(np.median(speeds)))]
    path_x, path_y = np.abs(steps[:, 0]).sum(), np.abs(steps[:, 1]).sum()
    total = path_x + path_y + 1e-9
    if motion == "bounce_horizontal":
        checks.append(clamp01((path_x / total - 0.5) / (axis_share - 0.5)))
    elif motion == "bounce_vertical":
        checks.append(clamp01((path_y / total - 0.5) / (axis_share - 0.5)))
    elif motion == "bounce_diagonal":
        checks.append(clamp01(min(path_x, path_y) / total / diagonal_share))
    elif motion == "orbit":
        if times_s.size < 4:
            return 0.0
        centre, radius, rms = fit_circle(centres)
        lo, hi = ORBIT_RADIUS_RANGE
        checks.append(clamp01(1.0 - max(rms - circle_noise_floor, 0.0) / (circle_tolerance * max(radius, 1e-6))))
        checks.append(1.0 if 0.6 * lo <= radius <= 1.5 * hi else 0.0)
        # One direction of travel around the fitted centre: |net swept angle| / total swept angle.
        angles = np.arctan2(centres[:, 1] - centre[1], centres[:, 0] - centre[0])  # [F]
        swept = np.angle(np.exp(1j * np.diff(angles)))  # [F-1] wrapped to (-pi, pi]
        checks.append(clamp01(abs(float(swept.sum())) / (np.abs(swept).sum() + 1e-9) / 0.8))
    else:
        raise ValueError(f"motion must be a TinyWorld motion, got {motion!r}")
    return min(checks)


def trajectory_score(
    det: Detections, scene: Scene, frames: np.ndarray, *, fps: float, pixels_per_unit: float, min_seen: int = 4
) -> float:
    """Mean over prompted objects of :func:`motion_score` on the centroid track of its colour's largest component,
    using the frames where it is clear of other objects. A moving object seen clear in fewer than ``min_seen`` frames
    of the clip (and not because of occlusion) scores 0, as does a static object never seen.
    """

    def score_object(obj: ObjectSpec, ignore_occlusion: bool) -> float | None:
        needed = 1 if obj.motion == "static" else min_seen
        observed = object_observations(det, obj, frames, min_clear=needed, ignore_occlusion=ignore_occlusion)
        if observed is None:
            return None
        seen_frames, idx = observed
        if idx.size < needed:
            return 0.0
        centres = np.stack([det.cx[idx], det.cy[idx]], axis=1) / pixels_per_unit  # [F, 2] frame units
        return motion_score(obj.motion, seen_frames / fps, centres)

    return per_object_mean(scene, score_object)


def background_model(
    scene: Scene, frames: torch.Tensor, background_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Expected background per frame and, for a panning background, the fitted stripe phase per frame.

    Args:
        frames: ``[T, H, W, 3]`` float.
        background_mask: ``[T, H, W]`` bool, pixels used for the fit.
    Returns:
        model ``[T, H, W, 3]`` and phase ``[T]`` (rad, None unless panning).
    """
    num_frames, height, width, _ = frames.shape
    colour = torch.tensor(BACKGROUND_COLOURS[scene.background.colour])  # [3]
    kind = scene.background.kind
    if kind == "solid":
        return colour.expand(num_frames, height, width, 3), None
    if kind == "gradient":
        y = (torch.arange(height, dtype=torch.float32) + 0.5) / height  # [H]
        gain = (1.0 - GRADIENT_DEPTH * y).view(1, height, 1, 1)  # [1, H, 1, 1]
        return (gain * colour).expand(num_frames, height, width, 3), None
    # Panning stripes: project each pixel on the colour to get its gain, average columns over background pixels,
    # then least-squares fit  gain(x) = a + b cos(theta x) + c sin(theta x)  per frame; phase = atan2(-c, b).
    gain = (frames @ colour) / (colour @ colour)  # [T, H, W]
    weight = background_mask.float()  # [T, H, W]
    column_weight = weight.sum(dim=1)  # [T, W]
    column_gain = (gain * weight).sum(dim=1) / column_weight.clamp(min=1.0)  # [T, W]
    x = (torch.arange(width, dtype=torch.float32) + 0.5) / width  # [W]
    theta = 2 * math.pi * PAN_CYCLES * x  # [W]
    basis = torch.stack([torch.ones_like(theta), torch.cos(theta), torch.sin(theta)], dim=-1)  # [W, 3]
    weighted = basis.unsqueeze(0) * column_weight.unsqueeze(-1)  # [T, W, 3]
    normal = weighted.transpose(1, 2) @ basis + 1e-3 * torch.eye(3)  # [T, 3, W] @ [W, 3] -> [T, 3, 3]
    rhs = (weighted * column_gain.unsqueeze(-1)).sum(dim=1)  # [T, 3]
    coef = torch.linalg.solve(normal, rhs)  # [T, 3]
    phase = torch.atan2(-coef[:, 2], coef[:, 1])  # [T]
    stripes = 1.0 - PAN_AMPLITUDE + PAN_AMPLITUDE * torch.cos(theta.view(1, width) + phase.view(num_frames, 1))  # [T, W]
    model = stripes.view(num_frames, 1, width, 1) * colour.view(1, 1, 1, 3)  # [T, 1, W, 3]
    return model.expand(num_frames, height, width, 3), phase


def background_errors(frames: torch.Tensor, model: torch.Tensor, background_mask: torch.Tensor) -> np.ndarray:
    """Mean absolute error (over background pixels and channels) per frame: ``[T]``; NaN where no pixel is background."""
    error = (frames - model).abs().mean(dim=-1)  # [T, H, W]
    weight = background_mask.float()  # [T, H, W]
    per_frame = (error * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1)  # [T]
    return per_frame.numpy()


def background_stability_score(
    errors: np.ndarray,
    phase: np.ndarray | None,
    start: int,
    end: int,
    *,
    fps: float,
    exact_error: float = 0.03,
    zero_error: float = 0.15,
    pan_rate_slack: float = 0.2,
    pan_rate_zero: float = 0.7,
) -> float:
    """Background agreement of one clip in [0, 1].

    Per-frame mean absolute error (``errors`` ``[T]``) maps to 1 at or below ``exact_error`` and 0 at or above
    ``zero_error`` (linear between), averaged over the clip. For a panning background (``phase`` ``[T]``) the score is
    the minimum with a pan-rate check: the slope of the unwrapped fitted phase over the clip against the world's rate;
    a relative error up to ``pan_rate_slack`` scores 1, ``pan_rate_zero`` or more scores 0 (a frozen pan scores 0).
    """
    clip_errors = errors[start:end]
    clip_errors = np.where(np.isnan(clip_errors), zero_error, clip_errors)
    score = float(np.mean(np.clip(1.0 - (clip_errors - exact_error) / (zero_error - exact_error), 0.0, 1.0)))
    if phase is None or end - start < 3:
        return score
    expected_rate = 2 * math.pi / (PAN_PERIOD_S * fps)  # rad per frame
    unwrapped = np.unwrap(phase[start:end])  # [F]
    rate = float(np.polyfit(np.arange(end - start, dtype=np.float64), unwrapped, 1)[0])  # least-squares slope
    rate_error = abs(rate - expected_rate) / expected_rate
    rate_score = clamp01(1.0 - max(rate_error - pan_rate_slack, 0.0) / (pan_rate_zero - pan_rate_slack))
    return min(score, rate_score)


# ----------------------------------------------------------------------------------------------------------------
# Scorer
# ----------------------------------------------------------------------------------------------------------------


def as_float_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``[T, H, W, 3]`` uint8 (or float in [0, 1]) numpy/torch -> float32 torch ``[T, H, W, 3]`` in [0, 1]."""
    frames = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got {tuple(frames.shape)}")
    if frames.shape[0] < 1:
        raise ValueError("frames must hold at least one frame, got T=0")
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if frames.is_floating_point():
        return frames.float().clamp(0.0, 1.0)
    raise TypeError(f"frames must be uint8 or float, got dtype {frames.dtype}")


class TinyWorldScorer:
    """Ground-truth scorer for TinyWorld videos (the ``scorer=tinyworld`` config group).

    Args:
        clip_seconds: VBench-Long clip length (seconds).
        onset_threshold: drift onset = first clip whose mean over ``dimensions`` is below this.
        dimensions: subset of :data:`DIMENSIONS` to report.
        include_video_mean: also emit ``clip = -1`` rows (mean over clips).
        fg_threshold, colour_tolerance, occlusion_margin_px: detector settings, see :func:`detect`.
        min_area_fraction: components smaller than this fraction of a small circle's area are noise.
    """

    def __init__(
        self,
        *,
        clip_seconds: float = 2.0,
        onset_threshold: float = 0.8,
        dimensions: Sequence[str] = DIMENSIONS,
        include_video_mean: bool = True,
        fg_threshold: float = 0.55,
        colour_tolerance: float = 0.4,
        occlusion_margin_px: int = 2,
        min_area_fraction: float = 0.3,
    ) -> None:
        unknown = [d for d in dimensions if d not in DIMENSIONS]
        if unknown:
            raise ValueError(f"scorer.dimensions must be a subset of {list(DIMENSIONS)}, got unknown {unknown}")
        if not clip_seconds > 0:
            raise ValueError(f"scorer.clip_seconds must be > 0, got {clip_seconds}")
        self.clip_seconds = float(clip_seconds)
        self.onset_threshold = float(onset_threshold)
        self.dimensions = tuple(dimensions)
        self.include_video_mean = include_video_mean
        self.fg_threshold = fg_threshold
        self.colour_tolerance = colour_tolerance
        self.occlusion_margin_px = occlusion_margin_px
        self.min_area_fraction = min_area_fraction

    @torch.no_grad()
    def score_frames(self, frames: np.ndarray | torch.Tensor, prompt: str | Scene, fps: float) -> list[dict]:
        """Score a video against its prompt.

        Args:
            frames: ``[T, H, W, 3]`` uint8 RGB (or float in [0, 1]).
            prompt: a TinyWorld prompt (or its parsed Scene).
            fps: frame rate, sets the clip cut and the speeds.
        Returns:
            rows ``{"clip", "dimension", "score", "start_frame", "end_frame"}``, clips in order, then (if
            ``include_video_mean``) ``clip = -1`` rows holding the mean over clips.
        """
        from tokentrim.video_io import clip_spans

        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        scene = parse(prompt) if isinstance(prompt, str) else prompt
        video = as_float_frames(frames)  # [T, H, W, 3]
        num_frames, height, width, _ = video.shape
        pixels_per_unit = float(min(height, width))
        det, objects = self.detect_objects(video)
        background_mask = torch.from_numpy(det.background_mask)
        model, phase = background_model(scene, video, background_mask)
        errors = background_errors(video, model, background_mask)
        phase_np = None if phase is None else phase.numpy()

        rows: list[dict] = []
        for clip, (start, end) in enumerate(clip_spans(num_frames, fps, self.clip_seconds)):
            clear_frames = scored_frames(objects, start, end)  # frames where no two objects touch
            clip_frames = np.arange(start, end)  # shape and trajectory skip occlusion per object
            values = {
                "object_count": lambda: object_count_score(objects, scene, clear_frames),
                "colour_fidelity": lambda: colour_fidelity_score(objects, scene, clear_frames),
                "shape_persistence": lambda: shape_persistence_score(
                    objects, scene, clip_frames, pixels_per_unit=pixels_per_unit
                ),
                "trajectory": lambda: trajectory_score(
                    objects, scene, clip_frames, fps=fps, pixels_per_unit=pixels_per_unit
                ),
                "background_stability": lambda: background_stability_score(errors, phase_np, start, end, fps=fps),
            }
            for dimension in self.dimensions:
                rows.append(
                    {"clip": clip, "dimension": dimension, "score": values[dimension](), "start_frame": start, "end_frame": end}
                )
        if self.include_video_mean:
            for dimension in self.dimensions:
                scores = [r["score"] for r in rows if r["dimension"] == dimension]
                rows.append(
                    {"clip": -1, "dimension": dimension, "score": float(np.mean(scores)), "start_frame": 0, "end_frame": num_frames}
                )
        return rows

    def detect_objects(self, video: torch.Tensor) -> tuple[Detections, Detections]:
        """`[T, H, W, 3]` float video -> (every palette component, the object-sized ones the scores use)."""
        det = detect(
            video,
            fg_threshold=self.fg_threshold,
            colour_tolerance=self.colour_tolerance,
            occlusion_margin_px=self.occlusion_margin_px,
        )
        min_area = self.min_area_fraction * math.pi * (SIZES["small"] * float(min(video.shape[1:3]))) ** 2
        return det, det.select(det.area >= min_area)

    @torch.no_grad()
    def count_errors(self, frames: np.ndarray | torch.Tensor, prompt: str | Scene) -> dict[int, int]:
        """Why `object_count` falls: {detected - prompted objects: number of frames}, over the frames it scores
        (no two objects touching). Positive keys are extra components (duplicates, objects split into two colours),
        negative ones missing objects."""
        scene = parse(prompt) if isinstance(prompt, str) else prompt
        video = as_float_frames(frames)
        _, objects = self.detect_objects(video)
        counts = component_counts(objects, scored_frames(objects, 0, video.shape[0]))  # [F'] per scored frame
        errors, frequency = np.unique(counts - len(scene.objects), return_counts=True)
        return {int(e): int(n) for e, n in zip(errors, frequency)}

    def score_video_file(self, path: str | os.PathLike, prompt: str | Scene) -> list[dict]:
        """Read ``path`` with :func:`tokentrim.video_io.read_video` and score it (see :meth:`score_frames`)."""
        from tokentrim.video_io import read_video

        frames, fps = read_video(path)
        return self.score_frames(frames, prompt, fps)

    def drift_onset(self, rows: Sequence[dict]) -> int | None:
        """First clip whose mean over this scorer's dimensions is below ``onset_threshold``, or None."""
        return drift_onset(rows, threshold=self.onset_threshold, dimensions=self.dimensions)


def drift_onset(rows: Sequence[dict], *, threshold: float = 0.8, dimensions: Sequence[str] = DIMENSIONS) -> int | None:
    """Index of the first clip (``clip >= 0``) whose mean score over ``dimensions`` is below ``threshold``; None if none.

    The onset time in seconds is that row's ``start_frame / fps``.
    """
    by_clip: dict[int, list[float]] = {}
    for row in rows:
        if row["clip"] >= 0 and row["dimension"] in dimensions:
            by_clip.setdefault(int(row["clip"]), []).append(float(row["score"]))
    for clip in sorted(by_clip):
        if float(np.mean(by_clip[clip])) < threshold:
            return clip
    return None


def score_frames(
    frames: np.ndarray | torch.Tensor, prompt: str | Scene, fps: float, clip_seconds: float = 2.0, **scorer_kwargs
) -> list[dict]:
    """Functional form of :meth:`TinyWorldScorer.score_frames` (``scorer_kwargs`` go to the constructor)."""
    return TinyWorldScorer(clip_seconds=clip_seconds, **scorer_kwargs).score_frames(frames, prompt, fps)


def score_video_file(path: str | os.PathLike, prompt: str | Scene, clip_seconds: float = 2.0, **scorer_kwargs) -> list[dict]:
    """Functional form of :meth:`TinyWorldScorer.score_video_file`."""
    return TinyWorldScorer(clip_seconds=clip_seconds, **scorer_kwargs).score_video_file(path, prompt)
