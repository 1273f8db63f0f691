"""Pipelined generation (`video.writer_queue`) on the tiny random-weight causal Wan backbone, in-process:

* the pipelined run writes the same bytes as the serial one (`video.writer_queue=0`), even with a writer slowed at
  random, and records per-video rollout / decode / encode seconds in meta;
* a write that fails mid-run is raised in the caller naming the video, leaves no file that counts as done, and the
  rerun completes every video exactly once (the finished ones untouched);
* a run directory made with one encoding refuses the other unless overwrite.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf, open_dict

from test_cli import TINY_WAN
from tokentrim import generate as gen
from tokentrim.backbones import build_backbone
from tokentrim.cli import validate
from tokentrim.video_writer import WriterError

# one block of 3 latent frames (9 pixel frames), 2 prompts x 1 seed, TokenTrim (triggering: lam=0) = 2 videos a run
SMALL = ["backbone.video.num_latent_frames=3", "prompts.seeds=[0]", "trim.warmup=0", "trim.lam=0"]
TIMING = ("wall_s", "decode_s", "encode_s", "started_unix", "decoded_unix", "finished_unix")


def config(root: Path, *extra: str) -> DictConfig:
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*TINY_WAN, *SMALL, f"prompts.path={root / 'prompts.txt'}",
                                           f"paths.output_root={root / 'out'}", *extra])
    validate(cfg, command="generate")
    return cfg


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipelined")
    (root / "prompts.txt").write_text("a red ball rolls\na blue cube spins\n")
    return root


@pytest.fixture(scope="module")
def backbone(root: Path):
    cfg = config(root)
    return build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True), device="cpu", dtype=gen.DTYPES["float32"])


def run(cfg: DictConfig, out: Path, backbone) -> list[Path]:
    return gen.generate_variants([(cfg, out / "tokentrim")], backbone=backbone)


@pytest.fixture(scope="module")
def serial(root: Path, backbone) -> dict:
    """The reference: the serial path (`video.writer_queue=0`, every write inline)."""
    return outputs(run(config(root, "video.writer_queue=0"), root / "serial", backbone))


def outputs(run_dirs: list[Path]) -> dict[str, bytes | dict]:
    files: dict[str, bytes | dict] = {}
    for run_dir in run_dirs:
        for path in sorted(run_dir.rglob("*")):
            key = str(path.relative_to(run_dir.parent))
            if path.suffix in (".mp4", ".jsonl"):
                files[key] = path.read_bytes()
            elif path.parent.name == "meta":
                files[key] = {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}
    return files


def test_pipelined_run_writes_the_same_bytes_as_the_serial_run(root: Path, backbone, serial: dict, monkeypatch) -> None:
    real_write, rng, threads = gen.write_video, random.Random(0), set()

    def slow_write(path, *args, **kwargs):  # the writer lags behind the rollouts by a random amount
        import threading

        if Path(path).stem != "warm_up":  # the warm-up's test encode runs in the main thread, before the writer
            threads.add(threading.current_thread().name)
        time.sleep(rng.uniform(0.0, 0.3))
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(gen, "write_video", slow_write)
    piped = run(config(root, "video.writer_queue=2"), root / "piped", backbone)
    assert threads == {"tokentrim-video-writer"}  # the pipelined run really wrote in the background
    got = outputs(piped)
    assert len([k for k in serial if k.endswith(".mp4")]) == 2
    assert got.keys() == serial.keys() and got == serial
    rows = [json.loads(p.read_text()) for d in piped for p in sorted((d / "meta").glob("*.json"))]
    for row in rows:
        assert row["encoding"] == "official" and row["encode_s"] > 0 and row["decode_s"] > 0 and row["wall_s"] > 0
        assert row["started_unix"] < row["decoded_unix"] < row["finished_unix"]
    env = json.loads((piped[0] / "env.json").read_text())
    assert env["video_encoding"]["encoding"] == "official" and env["video_writer_queue"] == 2
    header = (piped[0] / "videos.csv").read_text().splitlines()[0].split(",")
    assert {"encoding", "wall_s", "decode_s", "encode_s"} <= set(header)


def test_a_failed_write_surfaces_naming_the_video_and_the_rerun_completes_each_video_once(root: Path, backbone, serial: dict,
                                                                                        monkeypatch) -> None:
    cfg = config(root, "video.writer_queue=2")
    out = root / "killed"
    real_write, calls = gen.write_video, []

    def failing_write(path, *args, **kwargs):
        calls.append(Path(path).stem)
        if len(calls) == 3:  # warm-up, first video, then the second video fails
            raise OSError("disk full")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(gen, "write_video", failing_write)
    with pytest.raises(WriterError, match=r"writing video .+ failed: OSError: disk full") as raised:
        run(cfg, out, backbone)
    assert calls[0] == "warm_up" and f"writing video {calls[2]} failed" in str(raised.value)  # 2nd timed video
    metas = {p: p.stat().st_mtime_ns for p in out.rglob("meta/*.json")}
    assert [p.stem for p in metas] == [calls[1]]  # the first video is done
    assert not list(out.rglob(f"{calls[2]}.*"))  # the failed video left no file at all
    assert not any(p.name.startswith(".") or ".tmp" in p.name for p in out.rglob("*") if p.is_file())

    rewritten: list[str] = []

    def counting_write(path, *args, **kwargs):
        rewritten.append(Path(path).stem)
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(gen, "write_video", counting_write)
    run(cfg, out, backbone)
    assert sorted(n for n in rewritten if n != "warm_up") == sorted(  # every video not done before, once
        p.stem for p in out.rglob("meta/*.json") if p not in metas)
    assert {p: p.stat().st_mtime_ns for p in metas} == metas  # the finished video was not redone
    got = outputs([out / "tokentrim"])
    assert got == serial  # the same files as an uninterrupted run


def test_a_run_directory_made_with_one_encoding_refuses_the_other_unless_overwrite(root: Path) -> None:
    run_dir = root / "enc"
    run_dir.mkdir()
    near = config(root, "video.encoding=near_lossless")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(near, resolve=True))
    official = config(root)
    with pytest.raises(ValueError, match=r"video.encoding differ"):
        gen.check_run_dir(run_dir, official, overwrite=False)
    assert gen.check_run_dir(run_dir, official, overwrite=True) == ["video.encoding"]
    queue = config(root, "video.encoding=near_lossless", "video.writer_queue=0")  # the queue does not change videos
    assert gen.changed_generation_keys(run_dir, queue) == []
    with open_dict(near):
        del near["video"]  # a directory made before video.* existed was encoded near-lossless: not taken as official
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(near, resolve=True))
    assert gen.changed_generation_keys(run_dir, official) == ["video.encoding"]


def test_bad_video_keys_fail_with_one_line_naming_the_key(root: Path) -> None:
    from tokentrim.config_schema import ConfigError

    for override, message in [
        ("video.encoding=lossless", "video.encoding must be one of ['official', 'near_lossless'], got 'lossless'"),
        ("video.writer_queue=-1", "video.writer_queue must be >= 0 (0 = write inline), got -1"),
        ("video.writer_queue=true", "video.writer_queue must be an integer, got true"),
        ("video.warm_up_latent_frames=0", "video.warm_up_latent_frames must be >= 1 or null, got 0"),
        ("+video.crf=20", "video has unknown keys ['crf']"),
    ]:
        with pytest.raises(ConfigError) as raised:
            config(root, override)
        assert message in str(raised.value) and "\n" not in str(raised.value), override
