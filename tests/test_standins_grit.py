"""GRiT stand-ins: the shared bert-base-uncased tokenizer stand-in (CI) and the GRiT-B checkpoint (needs detectron2).

CI has no detectron2 (not on PyPI), so the GRiT checkpoint test is skipped there; `tests/test_scoring_weights.py`
checks that CI reports the four GRiT dimensions not ready with the one-line reason. The one run of the four
dimensions, ours vs vbench's own evaluate, is `scripts/vbench_grit_standins.py` (results/vbench_grit/README.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from tokentrim.scoring.standins import bert, standin_roots
from tokentrim.scoring.weights import GRIT_DIMENSIONS, check_dimensions


def test_bert_standin_is_found_offline_and_tokenizes_the_vbench_suite(tmp_path):
    from transformers import BertTokenizer

    files = bert.write_bert_base_uncased(tmp_path / "hf", with_weights=False, seed=0)
    assert bert.write_bert_base_uncased(tmp_path / "hf", with_weights=False, seed=1) == files  # kept, same snapshot
    repo = tmp_path / "hf" / "hub" / "models--bert-base-uncased"
    assert (repo / "refs" / "main").read_text() == files[0].parent.name
    tokenizer = BertTokenizer.from_pretrained("bert-base-uncased", cache_dir=tmp_path / "hf" / "hub",
                                              local_files_only=True, do_lower_case=True)
    assert len(tokenizer) == bert.VOCAB_SIZE == 30522
    assert {tok: tokenizer.convert_tokens_to_ids(tok) for tok in bert.SPECIAL_IDS} == bert.SPECIAL_IDS
    text = "A Red car on the left of a dog, front view"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    decoded = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(ids))  # decode() without torch
    assert tokenizer.clean_up_tokenization(decoded) == text.lower()
    # vocab size matches GRiT's text decoder (cfg.TEXT_DECODER.VOCAB_SIZE) and Tag2Text's bert config
    assert files[0].name == "config.json" and '"vocab_size": 30522' in files[0].read_text()


def test_grit_standin_loads_into_vbench_grit_and_detects(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 is not on PyPI (CI never has it); see results/vbench_grit")
    import torch

    from tokentrim.scoring.standins import grit
    from tokentrim.scoring.vbench_env import import_vbench, vbench_session

    roots = standin_roots(tmp_path)
    paths = grit.write(roots, seed=0)
    assert paths[0] == roots.cache_dir / "grit_model" / "grit_b_densecap_objectdet.pth"
    status = check_dimensions(GRIT_DIMENSIONS, cache_dir=roots.cache_dir, hf_home=roots.hf_home)
    assert all(item.is_ready for item in status.values()), status
    state = torch.load(paths[0], map_location="cpu")["model"]
    assert float(state["proposal_generator.centernet_head.agn_hm.bias"]) == grit.PROPOSAL_BIAS
    obj, colour = grit.colour_echo()  # "bicycle", "red" (module docstring 3)
    assert {obj, colour} <= set(grit.caption_words())
    frame = np.random.default_rng(0).integers(0, 256, (96, 160, 3), dtype=np.uint8)  # [H, W, 3]
    # vbench's two loaders (DetectionCheckpointer): ObjectDet for object_class / multiple_objects /
    # spatial_relationship (both decoders begin with [CLS]), DenseCap for color (the caption decoder begins with 104)
    for loader, expected in (("initialize_model_det", obj), ("initialize_model", colour)):
        with vbench_session(roots, "object_class"):
            captions = import_vbench("vbench.third_party.grit_model")
            model = captions.DenseCaptioning(torch.device("cpu"))
            getattr(model, loader)(model_weight=str(paths[0]))
            loaded = model.demo.predictor.model.state_dict()
            assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
            caption, _ = model.run_caption_tensor(frame)
        assert caption, f"{loader}: the stand-in keeps no box at vbench's 0.5 threshold"
        for description, box, det_descriptions in caption:  # one-word captions, both decoders
            assert description == expected and set(det_descriptions) == {obj}, (loader, description, det_descriptions)
            assert len(box) == 4
