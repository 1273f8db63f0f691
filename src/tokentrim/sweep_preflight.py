"""Sweep preflight: before any job of a `-m` sweep runs, expand the sweep into its points, compose each point's
config and refuse, in one line, two points that are provably the same experiment.

Two points are the same experiment when their configs agree on everything but labels and plumbing
(`IGNORED_KEYS`: variant/experiment names, logger, launcher, output paths, overwrite) once `trim` is replaced by its
decision-relevant canonical form (`tokentrim.trim.experiment_key`, told the video's batch count) and a disabled
`init` by "none". So they share backbone, prompts, seeds, init, frames, dtype, device, scorer and report settings,
and TokenTrim makes the same measurements and decisions in both: their videos and drift logs would be the same.

Points are those of Hydra's basic sweeper (the sweep's `hydra.sweeper.params` plus the command line's sweep
overrides, expanded as the sweeper expands them). Sweepers that choose points while running (Optuna) cannot be
expanded beforehand: the preflight says so in the log and checks nothing.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# top-level keys that label or route a run but cannot change what it computes
IGNORED_KEYS = ("variant", "experiment_name", "logger", "launcher", "paths", "overwrite", "hydra")


class SweepRefused(ValueError):
    """A sweep that must not run; the message is the one line shown to the user."""


def sweep_points(config: DictConfig) -> tuple[list[list[str]], list[str]]:
    """The basic sweeper's points as override lists (in its job order), and the keys that vary between points."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=True) if params is not None else {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    overrides = OverridesParser.create().parse_overrides(arguments)
    swept = list(dict.fromkeys(o.get_key_element() for o in overrides if o.is_sweep_override()))
    (points,) = BasicSweeper.split_arguments(overrides, None)
    return points, swept


def num_batches(cfg: DictConfig) -> int | None:
    """Batches per video of a composed config (None when the backbone's block size cannot be read without weights)."""
    from tokentrim.backbones import resolved_sampler

    frames = cfg.get("num_latent_frames") or cfg.backbone.get("video", {}).get("num_latent_frames")
    try:
        block = resolved_sampler(OmegaConf.to_container(cfg.backbone, resolve=True))["block_frames"]
    except (KeyError, OSError, ValueError) as err:
        log.info("sweep preflight: batch count unknown (%s); warm-up lengths are compared as given", err)
        return None
    return None if not frames else math.ceil(int(frames) / int(block))


def identity(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """What a point computes: the config without `IGNORED_KEYS`, trim as its experiment_key, a disabled init as none;
    and {trim knob: why it cannot matter here}."""
    from tokentrim.generate import trim_config
    from tokentrim.trim.canonical import dropped_knobs, experiment_key

    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in IGNORED_KEYS:
        plain.pop(key, None)
    trim, batches = trim_config(plain["trim"]), num_batches(cfg)
    plain["trim"] = [list(pair) for pair in experiment_key(trim, batches)]
    init = {k: v for k, v in plain.get("init", {}).items() if k != "name"}
    plain["init"] = init if init.get("enabled") else {"enabled": False}
    return plain, dropped_knobs(trim, batches)


def check_points(points: list[list[str]], swept: list[str], compose) -> None:
    """Raise SweepRefused naming the first two points (their swept overrides) with the same identity.
    `compose(overrides) -> DictConfig` composes one point's task config."""
    seen: dict[str, list[str]] = {}
    for point in points:
        shown = [o for o in point if o.split("=", 1)[0] in swept]
        try:
            plain, dropped = identity(compose(point))
        except (ValueError, TypeError, HydraException, OmegaConfBaseException) as err:  # refuse now, not mid-sweep
            raise SweepRefused(f"sweep point [{' '.join(shown)}]: {err}") from None
        key = json.dumps(plain, sort_keys=True, default=str)
        if key in seen:
            differ = [o.split("=", 1)[0] for o in shown if o not in seen[key]]
            why = "; ".join(f"{k}: {dropped.get(k.removeprefix('trim.'), 'no effect here')}" for k in differ)
            raise SweepRefused(
                f"sweep points [{' '.join(seen[key])}] and [{' '.join(shown)}] are the same experiment (same backbone, "
                f"prompts, seeds, init and trim experiment_key; {why or 'identical'}); drop one of them")
        seen[key] = shown


class SweepPreflight(Callback):
    """Hydra callback (conf/config.yaml `hydra.callbacks.sweep_preflight`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = config.hydra.sweeper.get("_target_")
        if target != BASIC_SWEEPER:
            log.warning("sweep preflight: %s picks its points while it runs; equivalent points are not checked", target)
            return
        command = sys.argv[0] if sys.argv and sys.argv[0].startswith("tokentrim") else "tokentrim"
        try:
            points, swept = sweep_points(config)
            loader = GlobalHydra.instance().config_loader()

            def compose(point: list[str]) -> DictConfig:
                composed = loader.load_sweep_config(config, point)
                with read_write(composed), open_dict(composed):
                    del composed["hydra"]  # its run-time fields are unset before a job starts
                return composed

            check_points(points, swept, compose)
        except SweepRefused as err:
            sys.stderr.write(f"{command}: {err}\n")
            raise SystemExit(2) from None
        except Exception as err:  # Hydra turns a callback's exception into a warning and sweeps on: stop instead
            sys.stderr.write(f"{command}: sweep preflight failed ({type(err).__name__}: {err}); no job was run\n")
            raise SystemExit(2) from None
        log.info("sweep preflight: %d points, each a different experiment", len(points))
