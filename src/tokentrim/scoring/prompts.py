"""Prompt suites and VBench video naming.

- The VBench suite is read from the installed package's `vbench/VBench_full_info.json` (946 entries, 944 unique
  prompts; per-dimension subsets; `auxiliary_info` for object_class, multiple_objects, color, spatial_relationship,
  scene, appearance_style). The file is located with `importlib.util.find_spec`, so vbench's `__init__` (torch,
  decord, a root-logger reconfiguration) is not run.
- Plain text prompt files (one prompt per line, e.g. MovieGen-style lists for long video) are read from a path.
- Video names follow VBench (`vbench/__init__.py::build_full_info_json`): `f"{prompt}-{index}.mp4"`, the prompt used
  verbatim (no truncation, no escaping). Where that name is impossible on disk (a `/` or NUL in the prompt, or more
  than 255 bytes), `video_name` falls back to a shortened name with a hash and warns; the manifest keeps the prompt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokentrim.scoring.totals import ALL_DIMENSIONS

logger = logging.getLogger(__name__)

__all__ = [
    "PromptEntry",
    "vbench_full_info_path",
    "load_vbench_suite",
    "suite_dimensions",
    "load_prompt_file",
    "video_name",
    "prompt_from_video_name",
    "auxiliary_info_for",
]

_MAX_NAME_BYTES = 255  # NAME_MAX on ext4/xfs/btrfs
_INDEX_SUFFIX = re.compile(r"-\d+$")


@dataclass(frozen=True)
class PromptEntry:
    """One prompt of a suite: the dimensions it serves and their auxiliary info (dimension -> dict)."""

    prompt: str
    dimensions: tuple[str, ...] = ()
    auxiliary_info: dict[str, dict] = field(default_factory=dict)


def vbench_full_info_path() -> Path:
    """Path of `VBench_full_info.json` inside the installed vbench package (not imported)."""
    spec = importlib.util.find_spec("vbench")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("vbench is not installed (pip install vbench==0.1.5); VBench_full_info.json is read from it")
    path = Path(list(spec.submodule_search_locations)[0]) / "VBench_full_info.json"
    if not path.is_file():
        raise FileNotFoundError(f"installed vbench has no prompt suite file {path}")
    return path


def load_vbench_suite(dimensions: Sequence[str] | None = None, *, full_info_path: str | os.PathLike | None = None) -> list[PromptEntry]:
    """The VBench prompt suite, optionally restricted to prompts serving any of `dimensions`.

    Duplicate prompts in the JSON (two in 0.1.5) are merged: one entry with the union of dimensions and auxiliary info,
    in first-seen order, so each prompt is generated once.
    """
    if dimensions is not None:
        unknown = sorted(set(dimensions) - set(ALL_DIMENSIONS))
        if unknown:
            raise ValueError(f"dimensions has unknown names {unknown}; expected names from {list(ALL_DIMENSIONS)}")
    path = Path(full_info_path) if full_info_path is not None else vbench_full_info_path()
    with open(path, encoding="utf-8") as handle:
        raw_entries = json.load(handle)
    merged: dict[str, PromptEntry] = {}
    for raw in raw_entries:
        prompt = raw["prompt_en"]
        dims = tuple(raw["dimension"])
        aux = dict(raw.get("auxiliary_info", {}))
        if prompt in merged:
            old = merged[prompt]
            dims = old.dimensions + tuple(d for d in dims if d not in old.dimensions)
            aux = {**old.auxiliary_info, **aux}
        merged[prompt] = PromptEntry(prompt=prompt, dimensions=dims, auxiliary_info=aux)
    entries = list(merged.values())
    if dimensions is not None:
        wanted = set(dimensions)
        entries = [entry for entry in entries if wanted & set(entry.dimensions)]
    return entries


def suite_dimensions(*, full_info_path: str | os.PathLike | None = None) -> dict[str, tuple[str, ...]]:
    """{prompt: the dimensions it lists} over the VBench suite (duplicates merged), for the prompt protocol."""
    return {entry.prompt: entry.dimensions for entry in load_vbench_suite(full_info_path=full_info_path)}


def auxiliary_info_for(prompt: str, *, full_info_path: str | os.PathLike | None = None) -> dict[str, dict]:
    """`auxiliary_info` of `prompt` in the VBench suite ({} if the prompt is not there or has none)."""
    for entry in load_vbench_suite(full_info_path=full_info_path):
        if entry.prompt == prompt:
            return dict(entry.auxiliary_info)
    return {}


def load_prompt_file(path: str | os.PathLike) -> list[PromptEntry]:
    """Prompts from a UTF-8 text file, one per line; blank lines are skipped and surrounding whitespace stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [prompt for prompt in prompts if prompt]
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompt (empty or blank lines only)")
    return [PromptEntry(prompt=prompt) for prompt in prompts]


def video_name(prompt: str, index: int, *, suffix: str = ".mp4") -> str:
    """VBench file name `f"{prompt}-{index}{suffix}"` (what `vbench_standard` mode looks for).

    Falls back, with a warning, to `f"{prompt prefix}~{sha256(prompt)[:8]}-{index}{suffix}"` with `/` and NUL replaced
    by `_`, cut to 255 bytes, when the VBench name cannot exist on disk. Such a name does not match vbench_standard
    lookup; the adapter takes the prompt from the manifest instead.
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    if not prompt:
        raise ValueError("prompt must be a non-empty string")
    tail = f"-{index}{suffix}"
    name = f"{prompt}{tail}"
    if "/" not in prompt and "\0" not in prompt and len(name.encode("utf-8")) <= _MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]
    budget = _MAX_NAME_BYTES - len(f"~{digest}{tail}".encode("utf-8"))
    head = prompt.replace("/", "_").replace("\0", "_").encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    fallback = f"{head}~{digest}{tail}"
    logger.warning("prompt %r cannot be a VBench file name (slash, NUL or > 255 bytes); using %r", prompt[:60], fallback)
    return fallback


def prompt_from_video_name(name: str) -> str:
    """Prompt of a VBench file name: the stem without its trailing `-<index>` (as `vbench.utils.get_prompt_from_filename`)."""
    stem = Path(name).stem
    return _INDEX_SUFFIX.sub("", stem)
