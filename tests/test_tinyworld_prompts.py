"""TinyWorld prompts: grammar round trip, vocabulary errors, tokenizer, disjoint train / held-out split."""

from pathlib import Path

import pytest
import torch
import yaml

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
from tokentrim.tinyworld.world import MOTIONS, OBJECT_COLOURS, SHAPES, BackgroundSpec, ObjectSpec, Scene

CONF = Path(__file__).resolve().parents[1] / "src" / "tokentrim" / "conf" / "prompts"
EXAMPLE = "a red circle bounces left and right over a dark blue background, a small green square stays still"


def test_example_prompt_parses_to_its_ground_truth():
    scene = parse(EXAMPLE)
    assert scene == Scene(
        background=BackgroundSpec(colour="dark blue", kind="solid"),
        objects=(
            ObjectSpec(shape="circle", colour="red", size="medium", motion="bounce_horizontal"),
            ObjectSpec(shape="square", colour="green", size="small", motion="static"),
        ),
    )


def test_describe_and_parse_round_trip_on_random_scenes():
    generator = torch.Generator().manual_seed(0)
    for split in ("train", "heldout"):
        for _ in range(200):
            scene = sample_scene(generator, split=split)
            prompt = describe(scene)
            assert parse(prompt) == scene
            assert describe(parse(prompt)) == prompt


def test_parse_tolerates_case_spacing_and_a_final_period():
    assert parse("A Red circle  bounces left and right over a dark blue background ,a small green square stays still.") == parse(EXAMPLE)


def test_unknown_words_raise_one_line_listing_the_vocabulary():
    with pytest.raises(ValueError) as err:
        parse("a purple dog jumps over a dark blue background")
    message = str(err.value)
    assert "\n" not in message
    assert "['dog', 'jumps']" in message  # every unknown word, sorted ("purple" is known: "dark purple")
    assert "vocabulary" in message and "'triangle'" in message and "'bounces'" in message


def test_grammar_error_names_what_was_expected():
    with pytest.raises(ValueError, match="expected a motion"):
        parse("a red circle over a dark blue background")
    with pytest.raises(ValueError, match="not both"):
        parse("a red circle stays still over a slowly panning grey gradient background")


def test_tokenizer_pads_with_zero_to_fixed_length_and_decodes_back():
    tokenizer = Tokenizer()
    longest = (
        "a small magenta triangle bounces left and right over a slowly panning dark purple background, "
        "a small yellow triangle bounces left and right, a large white diamond bounces left and right"
    )
    ids, mask = tokenizer([EXAMPLE, longest])
    assert ids.shape == (2, MAX_LENGTH) and ids.dtype == torch.long
    assert PAD_ID == 0 and VOCABULARY[0] == "<pad>"
    assert int(mask[0].sum()) == len(EXAMPLE.replace(",", " ,").split()) and bool((ids[0][~mask[0]] == 0).all())
    assert tokenizer.decode(ids[0]) == EXAMPLE and tokenizer.decode(ids[1]) == longest
    assert tokenizer.vocab_size == len(VOCABULARY) == len(set(VOCABULARY))


def test_heldout_rule_holds_out_20_triples_and_keeps_every_pair_in_training():
    assert len(HELDOUT_TRIPLES) == 20
    train = [(c, s, m) for c in OBJECT_COLOURS for s in SHAPES for m in MOTIONS if not is_heldout_triple(c, s, m)]
    assert {(c, s) for c, s, _ in train} == {(c, s) for c in OBJECT_COLOURS for s in SHAPES}
    assert {(c, m) for c, _, m in train} == {(c, m) for c in OBJECT_COLOURS for m in MOTIONS}
    assert {(s, m) for _, s, m in train} == {(s, m) for s in SHAPES for m in MOTIONS}


def test_train_and_heldout_samples_are_disjoint():
    generator = torch.Generator().manual_seed(1)
    train = {describe(sample_scene(generator, split="train")) for _ in range(300)}
    heldout = {describe(sample_scene(generator, split="heldout")) for _ in range(300)}
    assert not train & heldout
    assert all(split_of(parse(p)) == "train" for p in train)
    assert all(split_of(parse(p)) == "heldout" for p in heldout)


def test_sample_scene_is_deterministic_from_the_generator():
    first = [sample_scene(torch.Generator().manual_seed(9), split="heldout") for _ in range(2)]
    assert first[0] == first[1]


def test_prompt_configs_hold_distinct_heldout_prompts():
    default = yaml.safe_load((CONF / "tinyworld.yaml").read_text())
    evaluation = yaml.safe_load((CONF / "tinyworld_eval.yaml").read_text())
    assert len(evaluation["prompts"]) == 32 == len(set(evaluation["prompts"]))
    assert evaluation["prompts"] == prompt_set(split="heldout", count=32, seed=0)
    assert default["prompts"] == evaluation["prompts"][:4]
    assert all(split_of(parse(p)) == "heldout" for p in evaluation["prompts"])
