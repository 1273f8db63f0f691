"""Missing weights are named exactly, before anything runs; vbench is never allowed to download."""

import importlib.util
import os
import socket
import subprocess

import numpy as np
import pytest

from tokentrim import video_io
from tokentrim.scoring import check_dimensions, score_videos
from tokentrim.scoring.standins.bert import write_bert_base_uncased
from tokentrim.scoring.weights import GRIT_DIMENSIONS, DownloadBlockedError, WeightsMissingError, block_downloads


def _forbid_subprocess(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError(f"subprocess was called: {args}")

    class ForbiddenPopen(subprocess.Popen):  # a class: `weights.block_downloads` subclasses subprocess.Popen
        def __init__(self, *args, **kwargs):
            fail(*args)

    monkeypatch.setattr(subprocess, "run", fail)
    monkeypatch.setattr(subprocess, "Popen", ForbiddenPopen)


def test_check_names_exact_paths_under_each_root(tmp_path):
    status = check_dimensions(["dynamic_degree", "subject_consistency", "temporal_flickering"],
                              cache_dir=tmp_path / "c", torch_home=tmp_path / "t", hf_home=tmp_path / "h")
    assert status["temporal_flickering"].is_ready
    assert [str(r.path) for r in status["dynamic_degree"].missing_files] == [str(tmp_path / "c/raft_model/models/raft-things.pth")]
    assert str(tmp_path / "t/hub/checkpoints/dino_vitbase16_pretrain.pth") in status["subject_consistency"].one_line()
    assert "TORCH_HOME" in status["subject_consistency"].one_line()


def test_grit_dimensions_report_detectron2(tmp_path):
    line = check_dimensions(["color"], cache_dir=tmp_path)["color"].one_line()
    assert str(tmp_path / "grit_model/grit_b_densecap_objectdet.pth") in line and "\n" not in line
    assert ("detectron2" in line) == (importlib.util.find_spec("detectron2") is None)  # CI: named (not on PyPI)


def test_grit_dimensions_with_every_file_name_only_detectron2(tmp_path):
    """Checkpoint and bert tokenizer present: the four GRiT dimensions hinge on detectron2 alone, in one line each."""
    ckpt = tmp_path / "c" / "grit_model" / "grit_b_densecap_objectdet.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    write_bert_base_uncased(tmp_path / "h", with_weights=False, seed=0)
    status = check_dimensions(GRIT_DIMENSIONS, cache_dir=tmp_path / "c", hf_home=tmp_path / "h")
    has_detectron2 = importlib.util.find_spec("detectron2") is not None  # CI: never (not on PyPI)
    for dim in GRIT_DIMENSIONS:
        assert not status[dim].missing_files
        if has_detectron2:
            assert status[dim].is_ready
        else:
            assert status[dim].one_line() == (f"{dim}: missing Python package 'detectron2' (not on PyPI; build it from "
                                              "github.com/facebookresearch/detectron2 for your torch/CUDA)")


def test_present_files_make_a_dimension_ready(tmp_path):
    ckpt = tmp_path / "raft_model" / "models" / "raft-things.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    assert check_dimensions(["dynamic_degree"], cache_dir=tmp_path)["dynamic_degree"].is_ready


def test_scoring_a_dimension_with_missing_files_stops_with_one_line_and_never_spawns(tmp_path, monkeypatch):
    _forbid_subprocess(monkeypatch)
    video_io.write_video(tmp_path / "a cat-0.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=8)
    with pytest.raises(WeightsMissingError) as info:
        score_videos([tmp_path / "a cat-0.mp4"], scores_csv=tmp_path / "scores.csv", dimensions=["dynamic_degree"],
                     cache_dir=tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "empty/raft_model/models/raft-things.pth") in message and "VBENCH_CACHE_DIR" in message
    assert not (tmp_path / "scores.csv").exists()


def test_default_dimensions_are_the_ready_ones(tmp_path, monkeypatch):
    from tokentrim.scoring.vbench_env import import_vbench

    for module in ("vbench.utils", "vbench.temporal_flickering"):  # their imports probe libraries with `ldconfig -p`
        import_vbench(module)
    _forbid_subprocess(monkeypatch)
    video_io.write_video(tmp_path / "a cat-0.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=8)
    summary = score_videos([tmp_path / "a cat-0.mp4"], scores_csv=tmp_path / "scores.csv",
                           cache_dir=tmp_path / "empty", torch_home=tmp_path / "t", hf_home=tmp_path / "h",
                           prompt_protocol="all")  # "a cat" is a VBench object_class prompt
    assert "temporal_flickering" in summary.dimensions and "dynamic_degree" not in summary.dimensions
    assert not summary.errors and summary.scored == {"temporal_flickering": 1}


def test_guard_refuses_wget_and_sockets_then_restores():
    with block_downloads("test"):
        with pytest.raises(DownloadBlockedError, match="wget"):
            subprocess.run(["wget", "http://example.invalid/x"], check=True)
        with pytest.raises(DownloadBlockedError):
            socket.create_connection(("127.0.0.1", 9), timeout=0.1)
    assert subprocess.run(["true"]).returncode == 0


def test_env_vars_are_restored_after_scoring(tmp_path, monkeypatch):
    monkeypatch.delenv("VBENCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", "/keep/me")
    video_io.write_video(tmp_path / "a cat-0.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=8)
    score_videos([tmp_path / "a cat-0.mp4"], scores_csv=tmp_path / "scores.csv", dimensions=["temporal_flickering"],
                 cache_dir=tmp_path / "weights", torch_home=tmp_path / "t",
                 prompt_protocol="all")  # "a cat" is a VBench object_class prompt
    assert "VBENCH_CACHE_DIR" not in os.environ and os.environ["TORCH_HOME"] == "/keep/me"
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
