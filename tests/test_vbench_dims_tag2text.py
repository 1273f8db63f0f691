"""scene (Tag2Text Swin-B + bert-base-uncased) on stand-in weights: our scorer == vbench's evaluate per video.

scene reads `auxiliary_info`, so vbench runs in its standard prompt mode: the videos are named `<prompt>-<i>.mp4`
after scene prompts of `VBench_full_info.json`. The suite: a 2-s video (16 frames, whole-video row) and a 5.5-s one
(VBench-Long with 5.5-s clips: one clip `<video>_000.mp4`), 96x160 at 8 fps. scene reads 16 frames of every file, so
each row costs the same: two rows per side, not four.
"""

from __future__ import annotations

import json
from pathlib import Path


from tokentrim.scoring.standins import tag2text
from vbench_parity import (Case, assert_equal_per_video, assert_ready_and_named_when_missing,
                           assert_write_is_idempotent, parity_of, run_parities)

DIMENSION = "scene"
PROMPTS = ("alley", "bathroom")  # VBench scene prompts (auxiliary_info scene: alley / bathroom)



def test_check_says_ready_on_standins_and_names_the_file_when_empty(vbench_standins, tmp_path):
    roots = vbench_standins([DIMENSION])
    assert_write_is_idempotent(tag2text, roots)  # again: every file is complete, so nothing is rewritten
    assert_ready_and_named_when_missing([DIMENSION], roots, tmp_path)


def test_bert_standin_matches_the_real_layout(vbench_standins):
    from transformers import BertTokenizer

    roots = vbench_standins([DIMENSION])
    repo = roots.hf_home.joinpath(*tag2text.BERT_REPO)
    snapshot = repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
    config = json.loads((snapshot / "config.json").read_text())
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (30522, 768, 12)
    tokenizer = BertTokenizer.from_pretrained(str(snapshot))
    assert len(tokenizer) == 30522
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id] == [0, 100, 101, 102, 103]
    ids = tokenizer("a picture of an alley in a bathroom").input_ids
    assert tokenizer.unk_token_id not in ids and len(ids) == 2 + 8  # every word is one wordpiece


def test_tag2text_outputs_do_not_depend_on_grad_mode(vbench_standins):
    # our scorer runs scene under torch.no_grad (vbench_adapter.NO_GRAD_DIMENSIONS: with autograd on, the 16-frame
    # Swin-B forward keeps > 15 GB of activations on a CPU), so vbench's evaluate is compared under no_grad too; this
    # checks on 2 frames that grad mode changes nothing Tag2Text computes.
    import torch
    from vbench.third_party.tag2Text.tag2text import tag2text_caption

    roots = vbench_standins([DIMENSION])
    repo = roots.hf_home.joinpath(*tag2text.BERT_REPO)
    with tag2text._bert_from(repo / "snapshots" / (repo / "refs" / "main").read_text().strip()):
        model = tag2text_caption(pretrained=str(roots.cache_dir.joinpath(*tag2text.CHECKPOINT)), image_size=384,
                                 vit="swin_b").eval()
    images = torch.rand(2, 3, 384, 384, generator=torch.Generator().manual_seed(0)) * 4 - 2  # [2, 3, 384, 384]
    with torch.no_grad():
        embeds_no_grad = model.visual_encoder(images)  # [2, 145, 1024]
        captions_no_grad = model.generate(images, tag_input=None, return_tag_predict=True)
    embeds_grad = model.visual_encoder(images)
    assert embeds_grad.requires_grad
    captions_grad = model.generate(images, tag_input=None, return_tag_predict=True)
    assert torch.equal(embeds_grad.detach(), embeds_no_grad)
    assert captions_grad == captions_no_grad


def test_scorer_equals_vbench_evaluate_per_video(vbench_standins, tmp_path):
    roots = vbench_standins([DIMENSION])
    case = Case(DIMENSION, prompts=PROMPTS, mode="vbench_standard")
    parity = parity_of(run_parities(tmp_path, roots, [case]), DIMENSION)
    assert_equal_per_video(parity)
    (clip_row,) = [row for (_, clip), row in parity.ours.items() if clip == 0]
    assert Path(clip_row["clip_path"]).name.endswith("_000.mp4"), clip_row["clip_path"]
    print(f"{DIMENSION}: ours {parity.ours_s:.1f} s, vbench {parity.direct_s:.1f} s")
