"""`scripts/make_vbench_standins.py`: writes a family's files once, says ready, refuses bad names before writing."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_vbench_standins.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_vbench_standins", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writes_raft_says_ready_and_keeps_files_on_rerun(tmp_path, capsys):
    out = tmp_path / "standins"
    assert load_script().main([str(out), "--dimensions", "dynamic_degree", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "dynamic_degree: ready" in text and f"scorer=vbench scorer.cache_dir={out / 'vbench'}" in text
    checkpoint = out / "vbench" / "raft_model" / "models" / "raft-things.pth"
    stamp = checkpoint.stat().st_mtime_ns
    assert not [path for path in checkpoint.parent.iterdir() if path.name.startswith(".")]  # no temp file left
    assert load_script().main([str(out), "--dimensions", "dynamic_degree"]) == 0
    assert checkpoint.stat().st_mtime_ns == stamp  # complete file kept, not rewritten


def test_unknown_dimension_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "standins"
    assert load_script().main([str(out), "--dimensions", "dynamic_degre"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--dimensions" in err and "dynamic_degre" in err
    assert not out.exists()


def test_init_is_seeded_and_leaves_the_callers_rng_alone():
    import torch

    from tokentrim.scoring.standins import raft

    before = torch.random.get_rng_state()
    first, again, other = raft.build_state_dict(0), raft.build_state_dict(0), raft.build_state_dict(1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["module.fnet.conv1.weight"], other["module.fnet.conv1.weight"])
