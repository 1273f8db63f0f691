"""Prompt suites from the installed vbench package, plain prompt files, VBench video names."""

import pytest

from tokentrim.scoring.prompts import (
    auxiliary_info_for,
    load_prompt_file,
    load_vbench_suite,
    prompt_from_video_name,
    video_name,
)


def test_vbench_suite_has_944_unique_prompts_and_per_dimension_subsets():
    suite = load_vbench_suite()
    assert len(suite) == 944  # 946 entries, two duplicated prompts merged
    assert len(load_vbench_suite(["temporal_flickering"])) == 75
    assert len(load_vbench_suite(["human_action"])) == 100


def test_auxiliary_info_comes_from_the_suite():
    assert auxiliary_info_for("a bird and a cat") == {"multiple_objects": {"object": "bird and cat"}}
    assert auxiliary_info_for("not a vbench prompt") == {}


def test_prompt_file_missing_or_empty_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_prompt_file(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no prompt"):
        load_prompt_file(empty)
    good = tmp_path / "moviegen.txt"
    good.write_text("a long shot of a city\n\n  a dog runs  \n")
    assert [entry.prompt for entry in load_prompt_file(good)] == ["a long shot of a city", "a dog runs"]


def test_video_name_is_vbench_naming_and_round_trips():
    name = video_name("In a still frame, a stop sign", 3)
    assert name == "In a still frame, a stop sign-3.mp4"
    assert prompt_from_video_name(name) == "In a still frame, a stop sign"


def test_impossible_names_fall_back_to_a_short_hashed_name():
    slash = video_name("AC/DC on stage", 0)
    assert "/" not in slash and slash.endswith("-0.mp4")
    long = video_name("x" * 400, 12)
    assert len(long.encode()) <= 255 and long.endswith("-12.mp4")
    assert video_name("x" * 400, 12) != video_name("x" * 399 + "y", 12)
