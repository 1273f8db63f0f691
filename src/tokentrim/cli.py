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
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

logger = logging.getLogger("tokentrim")

COMMANDS = ("run", "generate", "score", "report", "vbench-check")
CONF_DIR = Path(__file__).parent / "conf"


# ---------------------------------------------------------------------------------------------- config helpers
# commands that build the generator (the user-supplied weights must exist) / read the scorer's weights
_GENERATING = ("run", "generate")
_SCORING = ("run", "generate", "score")


def validate(cfg: DictConfig, *, command: str | None = None) -> None:
    """The one preflight: every check that can fail before any directory, model or W&B run is created.

    Types, ranges, unknown keys and cross-group rules (`tokentrim.config_schema.check_config`), the prompts (file
    readable as UTF-8, inside the TinyWorld grammar where the backbone or scorer needs it), the scorer's dimensions and,
    for commands that generate, the real backbone's files. Raises `ConfigError` (one line naming key, rule, value).
    `command` defaults to the running CLI command ("run" outside the CLI: the sweep preflight calls this per point).
    """
    from tokentrim.backbones import check_wan_files
    from tokentrim.prompts import check_prompts_fit, load_prompts
    from tokentrim.scoring.scorer_config import check_prompts

    command = command or _COMMAND[0]
    typed = check_config(plain_config(cfg))
    prompts = load_prompts(typed["prompts"])
    check_prompts_fit(prompts, backbone=typed["backbone"], scorer=typed["scorer"])
    if command in _SCORING:
        _scorer_preflight(typed["scorer"], typed["device"])
    if command in _GENERATING:  # scorer.prompt_protocol=standard: every prompt to generate is in the VBench suite
        _as_config_error(lambda: check_prompts(typed["scorer"], prompts))
    backbone = typed["backbone"]
    if command in _GENERATING and backbone["kind"] == "wan" and not backbone["random_weights"]:
        _as_config_error(lambda: check_wan_files(backbone))  # a corrected path is then not refused as a changed config


def check_config(container: dict) -> dict:
    from tokentrim.config_schema import check_config as check

    return check(container)


def plain_config(cfg: DictConfig) -> dict:
    """`cfg` resolved to plain containers; a missing mandatory value (`???`) or a broken interpolation is one line."""
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    from tokentrim.config_schema import ConfigError

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", None) or str(err)
        raise ConfigError(f"{key} is required and has no value (set {key}=...)") from None
    except InterpolationResolutionError as err:
        raise ConfigError(f"{getattr(err, 'full_key', '?')}: {str(err).splitlines()[0]}") from None


def _scorer_preflight(scorer: dict, device: str) -> None:
    """The scorer's own readiness check (keys, options, every requested dimension's weights and packages)."""
    from tokentrim.scoring import preflight

    _as_config_error(lambda: preflight(scorer, device))


def _as_config_error(check) -> None:
    from tokentrim.config_schema import ConfigError

    try:
        check()
    except ConfigError:
        raise
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def variant_name(cfg: DictConfig, overrides: list[str] | None = None) -> str:
    """Directory name of the variant: baseline | tokentrim | tokentrim+flowmo | ..., plus the trim/init values of
    `overrides` (default: this Hydra job's task overrides)."""
    if cfg.variant:
        return str(cfg.variant)
    if not cfg.trim.enabled and not cfg.init.enabled:
        return str(cfg.report.baseline_variant)
    name = "+".join(([cfg.trim.name] if cfg.trim.enabled else ["notrim"]) + (["flowmo"] if cfg.init.enabled else []))
    suffix = []
    for override in _task_overrides() if overrides is None else overrides:
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
        base.variant = str(cfg.report.baseline_variant)
    return base


def experiment_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_root) / cfg.experiment_name


def run_dir_of(cfg: DictConfig) -> Path:
    return experiment_dir(cfg) / cfg.backbone.name / variant_name(cfg)


# ---------------------------------------------------------------------------------------------- stages
def generate_stage(cfg: DictConfig) -> list[Path]:
    """Generate the variant of `cfg` and, with `baseline=true`, its paired baseline, interleaved in one process."""
    from tokentrim.generate import generate_variants

    validate(cfg)  # everything, before the first results directory
    if not cfg.variant and variant_name(cfg) == cfg.report.baseline_variant:  # a baseline run says so in config.yaml
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.variant = str(cfg.report.baseline_variant)
    variants = [(cfg, run_dir_of(cfg))]
    if cfg.baseline and variant_name(cfg) != cfg.report.baseline_variant:
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
        if cfg.baseline and variant_name(cfg) != cfg.report.baseline_variant:
            dirs.insert(0, run_dir_of(baseline_config(cfg)))
    return [score(scorer, d, score_cache_dir=cfg.paths.score_cache_dir, device=str(cfg.device)) for d in dirs]


def report_stage(cfg: DictConfig, wandb_variants: list[str] | None = None) -> Path:
    """Tables, plots and W&B for the experiment (or `report.dir`); table.md is printed last. `wandb_variants`: log only
    these variants to W&B (None: all)."""
    from tokentrim.report import make_report

    target = Path(cfg.report.dir) if cfg.report.dir else experiment_dir(cfg)
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True)
    paths = make_report(target, baseline=str(cfg.report.baseline_variant), n_boot=cfg.report.n_boot,
                        plots=cfg.report.plots, logger_cfg=logger_cfg, wandb_variants=wandb_variants,
                        detector=OmegaConf.to_container(cfg.report.detector, resolve=True))
    logger.info("report written to %s", paths.out_dir)
    sys.stdout.write(Path(paths.tables["table_md"]).read_text(encoding="utf-8") + "\n")  # the README's promise
    sys.stdout.flush()
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
    from tokentrim.config_schema import ConfigError
    from tokentrim.scoring import DimensionFailedError

    try:
        return _run_command(command, cfg)
    except ConfigError as err:  # bad input: one line, exit code 2, nothing created
        sys.stderr.write(f"tokentrim {command}: {err}\n")
        raise SystemExit(2) from None
    except (ValueError, FileNotFoundError, DimensionFailedError) as err:  # errors found while working: one line
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
        objective = final_score(run_dir_of(cfg))  # before the report: its table is the last thing printed
        # a run logs its own variant and its baseline to W&B (a sweep's other jobs log theirs: one W&B run each)
        report_stage(cfg, wandb_variants=[variant_name(cfg), str(cfg.report.baseline_variant)])
        return objective
    elif command == "generate":
        generate_stage(cfg)
    elif command == "score":
        validate(cfg)
        score_stage(cfg)
    elif command == "report":
        check_config(plain_config(cfg))
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
    _COMMAND[0] = command
    # transformers 4.33 (imported by diffusers) warns about a torch API it uses; not ours, and not an error of the run
    warnings.filterwarnings("ignore", message=".*_register_pytree_node.* is deprecated", category=FutureWarning)
    from tokentrim.config_schema import ConfigError

    try:
        preflight(command, argv)
    except ConfigError as err:
        sys.stderr.write(f"tokentrim {command}: {err}\n")
        raise SystemExit(2) from None
    sys.argv = [f"tokentrim {command}", *argv]
    _app()


# Hydra's own flags: the preflight leaves those command lines to Hydra (help, config printing, another config)
_HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "--info", "-i", "-c", "--cfg", "-p", "--package", "--resolve",
                "--shell-completion", "-sc", "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
                "--version", "--run", "-r", "--experimental-rerun")


def preflight(command: str, argv: list[str]) -> None:
    """Compose the config of `argv` and validate it, before Hydra creates its output folder or any job runs.

    Hydra's own errors (override syntax, unknown group option, unknown key) become one `ConfigError` line. With `-m`,
    the sweep's value lists are left out here (the sweep preflight, `hydra.callbacks`, checks every point) and the
    command line's other overrides are checked.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from tokentrim.config_schema import ConfigError

    flags = [a for a in argv if a.startswith("-")]
    if any(f.split("=")[0] in _HYDRA_FLAGS for f in flags):
        return
    multirun = any(f in ("-m", "--multirun") for f in flags)
    overrides = [a for a in argv if not a.startswith("-")]
    parser = OverridesParser.create()
    kept = []
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as err:
            raise ConfigError(f"bad override {text!r}: {_one_line(err)}") from None
        if not (multirun and override.is_sweep_override()):
            kept.append(text)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="tokentrim"):
            cfg = compose(config_name="config", overrides=kept)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_one_line(err)) from None
    if command in ("run", "generate", "score"):
        validate(cfg, command=command)
    else:
        check_config(plain_config(cfg))


def _one_line(err: BaseException) -> str:
    """Hydra's multi-line messages as one line: the reason, then the available options it lists (if any)."""
    lines = [line.strip() for line in str(err).splitlines()]
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    lines = [line for line in lines if line and not line.startswith("See https://hydra.cc")]
    if any(line.startswith("Available options in") for line in lines):
        head = lines.index(next(line for line in lines if line.startswith("Available options in")))
        return f"{' '.join(lines[:head])}; {lines[head].rstrip(':')}: {', '.join(lines[head + 1:])}"
    return "; ".join(lines)


if __name__ == "__main__":
    main()
