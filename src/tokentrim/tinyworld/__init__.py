"""TinyWorld: the embedded procedural testbed (world, prompt grammar, ground-truth metrics).

Quick tour::

    from tokentrim.tinyworld import parse, describe, sample_scene, render, to_frames_thwc, score_frames
    scene = parse("a red circle bounces left and right over a dark blue background, a small green square stays still")
    video = render([scene], num_frames=80, height=64, width=64, fps=8.0, seed=0)  # [1, T, 3, H, W] float in [0, 1]
    rows = score_frames(to_frames_thwc(video[0]).numpy(), describe(scene), fps=8.0)  # per-clip ground-truth scores
"""

from tokentrim.tinyworld.metrics import DIMENSIONS, TinyWorldScorer, drift_onset, score_frames, score_video_file
from tokentrim.tinyworld.prompts import (
    HELDOUT_TRIPLES,
    MAX_LENGTH,
    PAD_ID,
    VOCABULARY,
    Tokenizer,
    describe,
    is_heldout_triple,
    parse,
    prompt_set,
    sample_scene,
    split_of,
)
from tokentrim.tinyworld.world import (
    BackgroundSpec,
    Layout,
    ObjectLayout,
    ObjectSpec,
    Scene,
    render,
    sample_layout,
    to_frames_thwc,
)

__all__ = [
    "DIMENSIONS",
    "HELDOUT_TRIPLES",
    "MAX_LENGTH",
    "PAD_ID",
    "VOCABULARY",
    "BackgroundSpec",
    "Layout",
    "ObjectLayout",
    "ObjectSpec",
    "Scene",
    "TinyWorldScorer",
    "Tokenizer",
    "describe",
    "drift_onset",
    "is_heldout_triple",
    "parse",
    "prompt_set",
    "render",
    "sample_layout",
    "sample_scene",
    "score_frames",
    "score_video_file",
    "split_of",
    "to_frames_thwc",
]
