"""Every bench script's knobs and their defaults live in `conf/bench/<script>.yaml` (the single source); the script's
flags override them for one call.

    parser = with_config_defaults(argparse.ArgumentParser(...), "overhead")  # after the add_argument calls

Each flag's default is the yaml value (string values go through the flag's type, as argparse does for defaults); a
yaml key without a flag, or a flag without a yaml key, is one ValueError naming both lists.
"""

from __future__ import annotations

import argparse
from importlib import resources

from omegaconf import OmegaConf


def packaged_config(group: str, name: str, *, resolve: bool = True) -> dict:
    """The package's `conf/<group>/<name>.yaml` as a plain dict (`resolve=False` leaves interpolations that need the
    whole Hydra composition, such as `${paths.weights_dir}`, as text)."""
    path = resources.files("tokentrim.conf") / group / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    return OmegaConf.to_container(OmegaConf.load(str(path)), resolve=resolve)


def bench_config(name: str) -> dict:
    """`conf/bench/<name>.yaml` as a plain dict."""
    try:
        return packaged_config("bench", name)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"bench {err} (every bench script reads conf/bench/<script>.yaml)") from None


def with_config_defaults(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """Set every flag's default from `conf/bench/<name>.yaml`; the yaml and the flags must name the same knobs."""
    values = bench_config(name)
    flags = {action.dest for action in parser._actions if action.option_strings and action.dest != "help"}
    unknown, missing = sorted(set(values) - flags), sorted(flags - set(values))
    if unknown or missing:
        raise ValueError(f"conf/bench/{name}.yaml and the script's flags disagree: yaml keys without a flag {unknown}, "
                         f"flags without a yaml key {missing}")
    parser.set_defaults(**values)
    return parser
