"""The one preflight (`tokentrim.cli.validate` over `tokentrim.config_schema`): every bad input is one stderr line
naming the key, exit code 2, and no directory is created (not even Hydra's own output folder).

Most cases call the real entry point `tokentrim.cli.main` in-process (torch is imported once); two go through a
subprocess to check the exact stderr of a fresh process.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokentrim import cli
from tokentrim.trim import TokenTrimConfig


def run_main(argv: list[str], capsys) -> tuple[int, list[str]]:
    old = sys.argv
    sys.argv = ["tokentrim", *argv]
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        sys.argv = old
    err = capsys.readouterr().err
    return exc.value.code, [line for line in err.splitlines() if line.strip()]


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("a red ball rolls\n")
    (tmp_path / "latin1.txt").write_bytes("un caf\xe9 qui roule\n".encode("latin-1"))
    return tmp_path


def bad_inputs(workdir: Path) -> list[tuple[list[str], str]]:
    """(overrides, the text the one stderr line must hold)."""
    readonly = workdir / "readonly"
    readonly.mkdir(exist_ok=True)
    readonly.chmod(0o555)
    return [
        (["trim.p=abc"], "trim.p must be a number, got 'abc'"),
        (["trim.lam=abc"], "trim.lam must be a number, got 'abc'"),
        (["trim.warmup=abc"], "trim.warmup must be an integer, got 'abc'"),
        (["trim.p=true"], "trim.p must be a number, got true"),
        (["trim.warmup=1.5"], "trim.warmup must be an integer, got 1.5"),
        (["trim.max_retries=0.5"], "trim.max_retries must be an integer, got 0.5"),
        *([(["trim.min_history=1.5"], "trim.min_history must be an integer, got 1.5")]
          if "min_history" in {f.name for f in dataclasses.fields(TokenTrimConfig)} else []),
        (["trim.p=1.5"], "trim.p must be in (0, 1], got 1.5"),
        (["trim.scope=everything"], "trim.scope must be one of ['all_but_sink', 'last_batch', 'all'], got 'everything'"),
        (["trim.retest=1"], "trim.retest must be true or false, got 1"),
        (["prompts=file"], "prompts.path is required"),
        (["prompts=file", f"prompts.path={workdir / 'latin1.txt'}", "scorer=vbench", "backbone=self_forcing",
          "backbone.random_weights=true"], f"prompts.path must be a UTF-8 text file, but {workdir / 'latin1.txt'}"),
        (["prompts=file", f"prompts.path={workdir / 'missing.txt'}"], "prompts.path: prompt file"),
        (["prompts.seeds=[-1]"], "prompts.seeds + seed_offset must be >= 0"),
        (["seed_offset=-3"], "prompts.seeds + seed_offset must be >= 0"),
        ([f"paths.output_root={readonly / 'out'}"], "paths.output_root must be a writable directory"),
        (["+trim.foo=1"], "trim has unknown keys ['foo']"),
        (["+foo=1"], "config has unknown keys ['foo']"),
        (["+logger.colour=red"], "logger has unknown keys ['colour']"),
        (["scorer=vbench", "+scorer.dimensionz=[x]"], "scorer has unknown keys ['dimensionz']"),
        (["logger=wandb", "logger.mode=cloud"], "logger.mode must be one of ['offline', 'online', 'disabled'], got 'cloud'"),
        (["logger=wandb", "logger.max_videos=-1"], "logger.max_videos must be >= 0, got -1"),
        (["launcher.name=kubernetes"], "launcher.name must be one of ['joblib', 'local', 'multigpu', 'slurm']"),
        (["init=flowmo", "init.steps=9"], "init.steps must be <= the sampler's 4 denoising steps"),
        (["init.lr=fast"], "init.lr must be a number, got 'fast'"),
        (["backbone=rolling_forcing", "backbone.random_weights=true", "trim.drift_source=first_step"],
         "trim.drift_source must be 'final' with backbone.pipeline=rolling_forcing"),
        (["prompts.prompts=[a red ball rolls]"], "prompts must fit the TinyWorld model's vocabulary"),
        (["dtype=float64"], "dtype must be one of ['float32', 'bfloat16', 'float16'], got 'float64'"),
        (["shard.index=2", "shard.count=2"], "shard.index must be in [0, shard.count=2), got 2"),
        (["report.n_boot=many"], "report.n_boot must be an integer, got 'many'"),
        # Hydra's own errors, one line each
        (["trim=aggressive"], "Could not find 'trim/aggressive'; Available options in 'trim': none, tokentrim"),
        (["trim.p=[1,"], "bad override 'trim.p=[1,'"),
        (["trim.foo=1"], "Could not override 'trim.foo'"),
    ]


def test_each_bad_input_is_one_stderr_line_with_exit_code_2_and_no_directory(workdir: Path, capsys) -> None:
    out = workdir / "out"
    for overrides, message in bad_inputs(workdir):
        argv = ["generate", *(o if o.startswith("paths.output_root") else o for o in overrides)]
        if not any(o.startswith("paths.output_root") for o in overrides):
            argv.append(f"paths.output_root={out}")
        code, lines = run_main(argv, capsys)
        assert code == 2, (overrides, lines)
        assert len(lines) == 1 and lines[0].startswith("tokentrim generate: ") and message in lines[0], (overrides, lines)
        assert not out.exists(), overrides  # no results directory and no Hydra folder
    assert sorted(p.name for p in workdir.iterdir()) == ["latin1.txt", "prompts.txt", "readonly"]
    assert list((workdir / "readonly").iterdir()) == []


def test_the_preflight_runs_for_score_and_report_too(workdir: Path, capsys) -> None:
    code, lines = run_main(["score", "trim.p=abc", f"paths.output_root={workdir / 'out'}"], capsys)
    assert code == 2 and lines == ["tokentrim score: trim.p must be a number, got 'abc'"]
    code, lines = run_main(["report", "report.n_boot=-1", f"paths.output_root={workdir / 'out'}"], capsys)
    assert code == 2 and lines == ["tokentrim report: report.n_boot must be >= 0, got -1"]
    assert not (workdir / "out").exists()


def test_a_sweep_with_a_bad_fixed_override_is_refused_before_hydra_starts(workdir: Path, capsys) -> None:
    code, lines = run_main(["generate", "-m", "trim.p=0.1,0.2", "trim.lam=abc", f"paths.output_root={workdir / 'out'}"], capsys)
    assert code == 2 and lines == ["tokentrim generate: trim.lam must be a number, got 'abc'"]
    assert not (workdir / "out").exists()


def test_a_fresh_process_prints_exactly_one_stderr_line(workdir: Path) -> None:
    """No warning, log line or traceback around the error (in-process capture could hide import-time output)."""
    for override, message in [("trim.p=true", "trim.p must be a number, got true"),
                              ("trim=aggressive", "Could not find 'trim/aggressive'"),
                              # checked after diffusers/transformers are imported (their warnings must not show)
                              ("prompts.prompts=[a red ball rolls]", "prompts must fit the TinyWorld model's vocabulary")]:
        proc = subprocess.run([sys.executable, "-m", "tokentrim.cli", "generate", override,
                               f"paths.output_root={workdir / 'out'}"], cwd=workdir, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines() == [f"tokentrim generate: {proc.stderr.split(': ', 1)[1].strip()}"]
        assert message in proc.stderr and proc.stdout == ""
    assert not (workdir / "out").exists()


def test_every_shipped_group_option_passes_the_schema() -> None:
    """Each conf/<group>/<option>.yaml composes and validates (real backbones with random weights: no files)."""
    from hydra import compose, initialize_config_dir

    wan = ["backbone.random_weights=true"]
    cases = [[], ["backbone=self_forcing", *wan], ["backbone=rolling_forcing", *wan], ["scorer=vbench"], ["logger=wandb"],
             ["launcher=joblib"], ["launcher=multigpu", "device=cpu"],
             ["launcher=slurm"],  # device=cuda: not checked here, SLURM jobs run on GPU nodes
             ["prompts=tinyworld_eval"], ["prompts=tinyworld_sampled"], ["init=flowmo"], ["trim=none"],
             ["prompts=vbench", "scorer=vbench", "backbone=self_forcing", *wan],
             ["experiment=paper_main", "device=cpu", "dtype=float32", *wan], ["hparams_search=optuna"],
             *[[f"+trim_variant={p.stem}"] for p in sorted((cli.CONF_DIR / "trim_variant").glob("*.yaml"))],
             *[[f"experiment={p.stem}"] for p in sorted((cli.CONF_DIR / "experiment").glob("ablation_*.yaml"))]]
    for overrides in cases:
        with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        cli.validate(cfg, command="score")  # raises on the first problem


def test_overwrite_over_a_changed_config_regenerates_instead_of_relabelling(tmp_path: Path) -> None:
    """`overwrite=true num_latent_frames=N` must not leave videos of the old length under a config.yaml saying N."""
    from omegaconf import OmegaConf

    from tokentrim.generate import changed_generation_keys, check_run_dir, clear_generated

    run = tmp_path / "run"
    (run / "videos").mkdir(parents=True)
    (run / "videos" / "a-0.mp4").write_bytes(b"old")
    (run / "videos.csv").write_text("video\na-0\n")
    old = OmegaConf.create({"backbone": {"name": "tiny"}, "trim": {}, "init": {}, "prompts": {}, "num_latent_frames": None,
                            "seed_offset": 0, "dtype": "float32"})
    (run / "config.yaml").write_text(OmegaConf.to_yaml(old))
    new = old.copy()
    new.num_latent_frames = 12
    assert changed_generation_keys(run, new) == ["num_latent_frames"]
    with pytest.raises(ValueError, match="num_latent_frames differ"):
        check_run_dir(run, new, overwrite=False)
    assert check_run_dir(run, new, overwrite=True) == ["num_latent_frames"]
    clear_generated(run, ["num_latent_frames"])
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
