"""human_action (UMT-L/16) on stand-in weights: our scorer == vbench's evaluate per video.

The suite: a 2-s video (whole-video row) and a 5.5-s one (VBench-Long protocol; human_action's 10-s clips make it
one clip, `<video>_full.mp4`), 96x160 at 8 fps, named `A person is <Kinetics label>-0.mp4` so vbench parses a label
from every file name (clip names included). The stand-in's head gives every class sigmoid ~0.5 < 0.85, so each
video scores False (0.0): the path runs end to end, the value is fixed (see standins/umt.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tokentrim.scoring.standins import umt
from vbench_parity import (Case, assert_equal_per_video, assert_ready_and_named_when_missing,
                           assert_write_is_idempotent, parity_of, run_parities)

DIMENSION = "human_action"
PROMPTS = ("A person is riding a bike", "A person is playing guitar")  # VBench human_action prompts



def test_check_says_ready_on_standins_and_names_the_file_when_empty(vbench_standins, tmp_path):
    roots = vbench_standins([DIMENSION])
    assert_write_is_idempotent(umt, roots)  # again: every file is complete, so nothing is rewritten
    assert_ready_and_named_when_missing([DIMENSION], roots, tmp_path)


def test_checkpoint_is_a_plain_state_dict_matching_vbench_umt_strictly(vbench_standins):
    # vbench loads with strict=False: a wrapped or misnamed file would load nothing and still "work"
    roots = vbench_standins([DIMENSION])
    state = torch.load(roots.cache_dir.joinpath(*umt.CHECKPOINT), map_location="cpu")
    assert "model" not in state and state["head.weight"].shape == (400, 1024)
    assert state["pos_embed"].shape == (1, 16 * 14 * 14, 1024)  # 16 frames, tubelet 1, 224 / 16 = 14
    result = umt.build_model(seed=1).load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_scorer_equals_vbench_evaluate_per_video(vbench_standins, tmp_path):
    from vbench.human_action import build_dict

    roots = vbench_standins([DIMENSION])
    case = Case(DIMENSION, prompts=PROMPTS, clip_seconds=None)  # 10-s clips: one `_full` clip
    parity = parity_of(run_parities(tmp_path, roots, [case]), DIMENSION)
    assert_equal_per_video(parity)
    labels = set(build_dict().values())
    for row in parity.ours.values():  # vbench's own parse of the file it read finds a Kinetics-400 label
        name = Path(row["clip_path"] or row["path"]).name.lower()
        assert name.split("-")[0].split("person is ")[-1].split("_")[0] in labels, name
    (clip_row,) = [row for (_, clip), row in parity.ours.items() if clip == 0]
    assert Path(clip_row["clip_path"]).name.endswith("_full.mp4"), clip_row["clip_path"]
    print(f"{DIMENSION}: ours {parity.ours_s:.1f} s, vbench {parity.direct_s:.1f} s")
