"""`tokentrim` command line: Hydra apps over `conf/` that compose the config and call plain functions.

    tokentrim run               generate (baseline + variant) -> score -> report, for the composed config
    tokentrim generate          generation only            tokentrim score     scoring only
    tokentrim report [DIR]      tables / plots / W&B for a run or sweep directory (default: the experiment's)
    tokentrim vbench-check      per VBench dimension: ready, or the exact missing files

Every command takes Hydra overrides (`trim.p=0.2 backbone=self_forcing`) and `-m` for sweeps
(`tokentrim run -m trim.p=0.05,0.1,0.2`). Results: `${paths.output_root}/<experiment>/<backbone>/<variant>/`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

logger = logging.getLogger("tokentrim")

COMMANDS = ("run", "generate", "score", "report", "vbench-check")
CONF_DIR = Path(__file__).parent / "conf"


# ---------------------------------------------------------------------------------------------- config helpers
def validate(cfg: DictConfig) -> None:
    """Every check that can fail before any model is built (one clear line each)."""
    from tokentrim.backbones import check_backbone_config, resolved_sampler, sampler_config
    from tokentrim.generate import DTYPES, flowmo_config, trim_config
    from tokentrim.prompts import load_prompts

    trim_config(cfg.trim)
    flowmo_config(cfg.init)
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    check_backbone_config(backbone)
    sampler_config(backbone["pipeline"], resolved_sampler(backbone))
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {cfg.dtype!r}")
    if not (str(cfg.device) == "cpu" or str(cfg.device).startswith("cuda")):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {cfg.device!r}")
    if not 0 <= cfg.shard.index < cfg.shard.count:
        raise ValueError(f"shard.index must be in [0, shard.count={cfg.shard.count}), got {cfg.shard.index}")
    if cfg.num_latent_frames is not None and cfg.num_latent_frames < 1:
        raise ValueError(f"num_latent_frames must be >= 1 or null, got {cfg.num_latent_frames}")
    from tokentrim.scoring import preflight

    preflight(OmegaConf.to_container(cfg.scorer, resolve=True), str(cfg.device))  # dimensions ready, before any work
    load_prompts(cfg.prompts)


def variant_name(cfg: DictConfig) -> str:
    """Directory name of the variant: baseline | tokentrim | tokentrim+flowmo | ..., plus swept trim/init values."""
    if cfg.variant:
        return str(cfg.variant)
    if not cfg.trim.enabled and not cfg.init.enabled:
        return "baseline"
    name = "+".join(([cfg.trim.name] if cfg.trim.enabled else ["notrim"]) + (["flowmo"] if cfg.init.enabled else []))
    suffix = []
    for override in _task_overrides():
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key.startswith(("trim.", "init.")) and key not in ("trim.name", "trim.enabled", "init.enabled"):
            suffix.append(f"{key.split('.', 1)[1]}{value}")
        elif key == "trim_variant" and value != "paper":  # experiment=variants: one named variant at a time
            suffix.append(value)
    return "_".join([name, *suffix])


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside a Hydra app (tests call the functions directly)
        return []


def baseline_config(cfg: DictConfig) -> DictConfig:
    """The paired baseline of `cfg`: same backbone, prompts and seeds; trim and init from their `none` files, so that
    every variant of a sweep shares one baseline directory."""
    base = cfg.copy()
    with open_dict(base):
        base.trim = OmegaConf.load(CONF_DIR / "trim" / "none.yaml")
        base.init = OmegaConf.load(CONF_DIR / "init" / "none.yaml")
        base.variant = "baseline"
    return base


def experiment_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_root) / cfg.experiment_name


def run_dir_of(cfg: DictConfig) -> Path:
    return experiment_dir(cfg) / cfg.backbone.name / variant_name(cfg)


# ---------------------------------------------------------------------------------------------- stages
def generate_stage(cfg: DictConfig) -> list[Path]:
    """Generate the variant of `cfg` and, with `baseline=true`, its paired baseline, interleaved in one process."""
    from tokentrim.backbones import check_wan_files
    from tokentrim.generate import generate_variants
    from tokentrim.prompts import load_prompts
    from tokentrim.scoring.scorer_config import check_prompts

    validate(cfg)
    # scorer.prompt_protocol=standard: every prompt to generate is in the VBench suite (one line, before any video)
    check_prompts(OmegaConf.to_container(cfg.scorer, resolve=True), load_prompts(cfg.prompts))
    if cfg.backbone.kind == "wan" and not cfg.backbone.random_weights:  # the user-supplied files, before any results
        check_wan_files(OmegaConf.to_container(cfg.backbone, resolve=True))  # directory: a fixed path is not refused
    variants = [(cfg, run_dir_of(cfg))]
    if cfg.baseline and variant_name(cfg) != "baseline":
        base = baseline_config(cfg)
        variants.insert(0, (base, run_dir_of(base)))
    return generate_variants(variants)


def score_stage(cfg: DictConfig) -> list[Path]:
    """Score the run dirs of `cfg` (variant and paired baseline), or with `score.videos_dir` a plain folder of mp4s."""
    from tokentrim.evaluate import score

    scorer = OmegaConf.to_container(cfg.scorer, resolve=True)
    folder = cfg.get("score", {}).get("videos_dir")
    if folder:
        from tokentrim.scoring.folder import write_folder_run

        if cfg.scorer.name != "vbench":
            raise ValueError(f"score.videos_dir is scored with VBench; set scorer=vbench, got scorer.name={cfg.scorer.name!r}")
        run_dir = Path(cfg.score.run_dir or experiment_dir(cfg) / cfg.backbone.name / cfg.score.variant)
        dirs = [write_folder_run(run_dir, folder, variant=str(cfg.score.variant), backbone=str(cfg.backbone.name),
                                 prompt_file=cfg.score.prompt_file)]
    else:
        dirs = [run_dir_of(cfg)]
        if cfg.baseline and variant_name(cfg) != "baseline":
            dirs.insert(0, run_dir_of(baseline_config(cfg)))
    return [score(scorer, d, score_cache_dir=cfg.paths.score_cache_dir, device=str(cfg.device)) for d in dirs]


def report_stage(cfg: DictConfig) -> Path:
    from tokentrim.report import make_report

    target = Path(cfg.report.dir) if cfg.report.dir else experiment_dir(cfg)
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True)
    paths = make_report(target, baseline="none", n_boot=cfg.report.n_boot, plots=cfg.report.plots, logger_cfg=logger_cfg)
    table = paths.tables.get("md")
    if table is not None and Path(table).exists():
        sys.stdout.write(Path(table).read_text() + "\n")
    logger.info("report written to %s", paths.out_dir)
    return paths.out_dir


def vbench_check(cfg: DictConfig) -> None:
    from tokentrim.scoring import check_dimensions, format_check

    scorer = cfg.scorer if cfg.scorer.name == "vbench" else OmegaConf.load(CONF_DIR / "scorer" / "vbench.yaml")
    status = check_dimensions(
        scorer.get("dimensions"), cache_dir=scorer.get("cache_dir"), torch_home=scorer.get("torch_home"),
        hf_home=scorer.get("hf_home"), slow_fast=bool(scorer.get("slow_fast", False)),
        slow_fast_dimensions=list(scorer.get("slow_fast_dimensions") or ["subject_consistency"]),
        slow_fast_mapping_dir=scorer.get("slow_fast_mapping_dir"), dinov2_path=scorer.get("dinov2_path"),
        scene_split=bool(scorer.get("scene_split", False)),
    )
    sys.stdout.write(format_check(status) + "\n")


def _dispatch(command: str, cfg: DictConfig) -> float | None:
    from tokentrim.scoring import DimensionFailedError

    try:
        return _run_command(command, cfg)
    except (ValueError, FileNotFoundError, DimensionFailedError) as err:  # config / input errors: one line
        logger.error("tokentrim %s: %s", command, err)
        raise SystemExit(1) from None


_COMMAND = ["run"]


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _app(cfg: DictConfig) -> float | None:
    return _dispatch(_COMMAND[0], cfg)


def _run_command(command: str, cfg: DictConfig) -> float | None:
    """Run `command`; `run` returns the variant's Final Score (the objective of `hparams_search=optuna`)."""
    if command == "run":
        from tokentrim.sweep import final_score

        generate_stage(cfg)
        score_stage(cfg)
        report_stage(cfg)
        return final_score(run_dir_of(cfg))
    elif command == "generate":
        generate_stage(cfg)
    elif command == "score":
        validate(cfg)
        score_stage(cfg)
    elif command == "report":
        report_stage(cfg)
    else:
        vbench_check(cfg)


def main() -> None:
    argv = sys.argv[1:]
    command = "run"
    if argv and argv[0] in COMMANDS:
        command, argv = argv[0], argv[1:]
    elif argv and not argv[0].startswith("-") and "=" not in argv[0]:
        sys.stderr.write(f"tokentrim: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}\n")
        raise SystemExit(2)
    if command == "report" and argv and "=" not in argv[0] and not argv[0].startswith("-"):
        report_dir = argv.pop(0)
        if not Path(report_dir).is_dir():
            sys.stderr.write(f"tokentrim report: {report_dir} is not a directory\n")
            raise SystemExit(2)
        argv.append(f"report.dir={report_dir}")
    sys.argv = [f"tokentrim {command}", *argv]
    _COMMAND[0] = command
    _app()


if __name__ == "__main__":
    main()
