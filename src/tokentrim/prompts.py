"""Prompt suites from `conf/prompts/*.yaml` (keys typed by `tokentrim.config_schema`, one schema per `source`).

`source`: `list` (the `prompts` key), `file` (one prompt per line of the UTF-8 file at `path`), `vbench` (the installed
package's VBench_full_info.json, optionally only the prompts of `dimensions`), `tinyworld` (`count` prompts of the
TinyWorld grammar from `split`, deterministic in `seed`). `limit` keeps the first N.

Every error is one `ConfigError` line naming the `prompts.*` key (and the file, for `source: file`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# `prompts.source`: the suites `load_prompts` reads (config_schema.PromptSource is built from this tuple)
SOURCES: tuple[str, ...] = ("list", "file", "vbench", "tinyworld")


def load_prompts(cfg: Mapping[str, Any]) -> list[str]:
    """The prompts of a `prompts` section (after `limit`), never empty."""
    from tokentrim.config_schema import ConfigError  # here: config_schema imports SOURCES from this module

    source = cfg["source"]
    if source == "list":
        prompts = list(cfg["prompts"] or [])
    elif source == "file":
        prompts = _read_prompt_file(cfg["path"])
    elif source == "vbench":
        from tokentrim.scoring.prompts import load_vbench_suite

        prompts = [entry.prompt for entry in load_vbench_suite(cfg["dimensions"])]
    elif source == "tinyworld":
        from tokentrim.tinyworld.prompts import prompt_set

        prompts = prompt_set(split=cfg["split"], count=int(cfg["count"]), seed=int(cfg["seed"]))
    else:
        raise ConfigError(f"prompts.source must be one of {list(SOURCES)}, got {source!r}")
    if cfg["limit"] is not None:
        prompts = prompts[: int(cfg["limit"])]
    if not prompts:
        raise ConfigError(f"prompts ({cfg['name']}) is empty: give prompts.prompts, prompts.path or another suite")
    return prompts


def _read_prompt_file(path: str) -> list[str]:
    from tokentrim.config_schema import ConfigError
    from tokentrim.scoring.prompts import load_prompt_file

    try:
        return [entry.prompt for entry in load_prompt_file(path)]
    except UnicodeDecodeError as err:
        raise ConfigError(f"prompts.path must be a UTF-8 text file, but {path} is not (byte {err.start}: "
                          f"{err.reason})") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"prompts.path: {str(err).splitlines()[0]}") from None


def check_prompts_fit(prompts: Sequence[str], *, backbone: Mapping[str, Any], scorer: Mapping[str, Any]) -> None:
    """Prompts the run cannot use, refused before generation: the TinyWorld model reads only its grammar's words
    (within its text length), and the TinyWorld scorer parses each prompt into the scene it checks."""
    if backbone["kind"] == "tinyworld":
        from tokentrim.tinyworld.backbone import read_export_config, weights_folder
        from tokentrim.tinyworld.prompts import Tokenizer

        folder = weights_folder(backbone.get("weights_dir"), backbone.get("assets"))
        tokenizer = Tokenizer(max_length=int(read_export_config(folder)["text_encoder"]["max_length"]))
        for prompt in prompts:
            _check_prompt(lambda: tokenizer.encode(prompt), "the TinyWorld model's vocabulary (backbone=tiny)")
    if scorer["name"] == "tinyworld":
        from tokentrim.tinyworld.prompts import parse

        for prompt in prompts:
            _check_prompt(lambda: parse(prompt), "the TinyWorld grammar (scorer=tinyworld)")


def _check_prompt(check, what: str) -> None:
    from tokentrim.config_schema import ConfigError

    try:
        check()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"prompts must fit {what}: {str(err).splitlines()[0]}") from None
