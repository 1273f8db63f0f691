"""env.json: versions, device, git state and date beside every result (house rule 13)."""

import datetime
import json
import subprocess

from tokentrim import env_info


def test_collect_env_records_versions_device_seed_and_utc_date():
    import torch

    env = env_info.collect_env("cpu", seed=7)
    assert env["seed"] == 7
    assert env["device"] == "cpu"
    assert env["device_name"].startswith("cpu")
    assert env["torch"] == torch.__version__
    assert env["cpu_count"] >= 1
    assert set(env["packages"]) == set(env_info.TRACKED_PACKAGES)
    assert env["packages"]["numpy"] is not None
    stamp = datetime.datetime.fromisoformat(env["date_utc"])
    assert stamp.utcoffset() == datetime.timedelta(0)
    for key in ("python", "hostname", "cuda", "cudnn", "gpu_name", "gpu_driver", "git_sha", "git_dirty"):
        assert key in env


def test_missing_package_version_is_null():
    versions = env_info.package_versions(("numpy", "surely-not-an-installed-distribution"))
    assert versions["numpy"] is not None
    assert versions["surely-not-an-installed-distribution"] is None


def test_git_absent_gives_null_sha_and_dirty(monkeypatch, tmp_path):
    monkeypatch.setattr(env_info.shutil, "which", lambda name: None)
    state = env_info.git_state(tmp_path)
    assert state == {"git_sha": None, "git_dirty": None, "git_root": None}


def test_git_sha_and_dirty_flag_follow_the_repo(tmp_path):
    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
            cwd=tmp_path, check=True, capture_output=True, text=True,
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "c")
    clean = env_info.git_state(tmp_path)
    assert clean["git_sha"] == git("rev-parse", "HEAD")
    assert clean["git_dirty"] is False
    (tmp_path / "a.txt").write_text("2")
    assert env_info.git_state(tmp_path)["git_dirty"] is True


def test_write_env_json_is_atomic_and_keeps_extra_keys(tmp_path):
    path = tmp_path / "run" / "env.json"
    written = env_info.write_env_json(path, device="cpu", seed=3, experiment="smoke", num_videos=2)
    loaded = json.loads(path.read_text())
    assert loaded["experiment"] == "smoke" and loaded["num_videos"] == 2 and loaded["seed"] == 3
    assert loaded["packages"] == written["packages"]
    assert [p.name for p in path.parent.iterdir()] == ["env.json"]  # no temp file left behind
