"""temporal_style and overall_consistency (ViCLIP) on stand-in weights: our scorer == vbench's evaluate per video.

The suite: a 2-s video (whole-video row) and a 5.5-s one (VBench-Long protocol; with these dimensions' 10-s clips it
is one clip, `<video>_full.mp4`, re-encoded by our scorer), 96x160 at 8 fps. custom_input mode; the prompt of each
file (clip names carry suffixes) goes to vbench as `prompt_list`. One module-wide run: vbench evaluates
temporal_style while our scorer runs overall_consistency.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tokentrim.scoring.standins import viclip
from vbench_parity import (Case, assert_equal_per_video, assert_ready_and_named_when_missing,
                           assert_write_is_idempotent, parity_of, run_parities)

DIMENSIONS = viclip.DIMENSIONS
PROMPTS = ("Close up of grapes on a rotating table. Van Gogh style",  # VBench temporal_style / overall prompts
           "A beautiful coastal beach in spring, waves lapping on sand, oil painting")



def test_check_says_ready_on_standins_and_names_the_file_when_empty(vbench_standins, tmp_path):
    roots = vbench_standins(DIMENSIONS)
    assert_write_is_idempotent(viclip, roots)  # again: every file is complete, so nothing is rewritten
    assert_ready_and_named_when_missing(DIMENSIONS, roots, tmp_path)


def test_vocab_is_clip_bpe_format_and_tokenizes_the_prompts(vbench_standins):
    roots = vbench_standins(DIMENSIONS)
    vocab = roots.cache_dir.joinpath(*viclip.VOCAB)
    lines = gzip.open(vocab).read().decode("utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and all(len(line.split()) == 2 for line in lines[1:])
    # the prompts' words were learned, so each is one token: as many ids as words / punctuation marks
    from tokentrim.scoring.standins.vbench_env import vbench_cache_dir

    with vbench_cache_dir(roots.cache_dir, bpe_path=vocab):
        from vbench.third_party.ViCLIP.simple_tokenizer import SimpleTokenizer

        tokenizer = SimpleTokenizer(str(vocab))
    ids = tokenizer.encode(PROMPTS[0])
    assert tokenizer.decode(ids).split() == "close up of grapes on a rotating table . van gogh style".split()
    assert len(ids) == 12 and max(tokenizer.encoder.values()) < 49408


@pytest.fixture(scope="module")
def parities(vbench_standins, tmp_path_factory):
    roots = vbench_standins(DIMENSIONS)
    cases = [Case(dim, prompts=PROMPTS, clip_seconds=None) for dim in DIMENSIONS]  # 10-s clips: one `_full` clip
    return run_parities(tmp_path_factory.mktemp("parity_viclip"), roots, cases)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_scorer_equals_vbench_evaluate_per_video(parities, dimension):
    parity = parity_of(parities, dimension)
    assert_equal_per_video(parity)  # one whole-video row, one clip row
    (clip_row,) = [row for (_, clip), row in parity.ours.items() if clip == 0]
    assert Path(clip_row["clip_path"]).name.endswith("_full.mp4"), clip_row["clip_path"]
    print(f"{dimension}: ours {parity.ours_s:.1f} s, vbench {parity.direct_s:.1f} s")
