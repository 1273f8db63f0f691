"""Which files and packages each VBench dimension needs, and a check that never downloads.

Paths are those vbench 0.1.5 opens in `local=True` mode (`vbench/utils.py::init_submodules` plus the loaders it calls),
under three roots the user fills:

- `cache_dir` (config `scorer.cache_dir`, env `VBENCH_CACHE_DIR`): every vbench checkpoint.
- `torch_home` (config `scorer.torch_home`, env `TORCH_HOME`): subject_consistency's DINO hub entry calls
  `torch.hub.load_state_dict_from_url` even in local mode (facebookresearch/dino `hubconf.py`), so the checkpoint must
  also sit in `<torch_home>/hub/checkpoints/`.
- `hf_home` (config `scorer.hf_home`, env `HF_HOME`): `bert-base-uncased` for scene (Tag2Text: tokenizer and BertModel)
  and the GRiT dimensions (tokenizer), in the huggingface_hub cache layout.

vbench itself would `wget` / `git clone` / `urlretrieve` whatever is missing, at `evaluate()` time and (ViCLIP tokenizer)
at import time. `check_dimensions` only looks at the file system and at `importlib.util.find_spec`; it imports nothing
from vbench. `block_downloads` is the in-process guard the adapter holds while vbench code runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokentrim.scoring.totals import ALL_DIMENSIONS

__all__ = [
    "GRIT_DIMENSIONS",
    "WeightRoots",
    "FileRequirement",
    "DimensionStatus",
    "WeightsMissingError",
    "DownloadBlockedError",
    "required_files",
    "required_modules",
    "slow_fast_paths",
    "check_dimensions",
    "format_check",
    "raise_if_missing",
    "block_downloads",
]

GRIT_DIMENSIONS: tuple[str, ...] = ("object_class", "multiple_objects", "color", "spatial_relationship")
_CLIP_DIMENSIONS = ("background_consistency", "aesthetic_quality", "appearance_style")
_VICLIP_DIMENSIONS = ("temporal_style", "overall_consistency")
_BERT_REPO_DIR = "hub/models--bert-base-uncased"


class WeightsMissingError(FileNotFoundError):
    """A dimension's checkpoint, tokenizer or package is missing; the message is one line naming it."""


class DownloadBlockedError(FileNotFoundError):
    """vbench tried to fetch something (subprocess, socket, hub) while scoring; we stop instead of downloading."""


@dataclass(frozen=True)
class WeightRoots:
    """The three weight roots. Defaults follow the tools' own defaults when a root is not configured."""

    cache_dir: Path
    torch_home: Path
    hf_home: Path

    @classmethod
    def resolve(
        cls,
        *,
        cache_dir: str | os.PathLike | None = None,
        torch_home: str | os.PathLike | None = None,
        hf_home: str | os.PathLike | None = None,
    ) -> "WeightRoots":
        """Config value, else the env var, else the tool's default (`~/.cache/vbench`, `~/.cache/torch`, `~/.cache/huggingface`).

        Reads the environment only when called (never at import).
        """
        home_cache = Path.home() / ".cache"
        return cls(
            cache_dir=Path(cache_dir or os.environ.get("VBENCH_CACHE_DIR") or home_cache / "vbench").expanduser(),
            torch_home=Path(torch_home or os.environ.get("TORCH_HOME") or home_cache / "torch").expanduser(),
            hf_home=Path(hf_home or os.environ.get("HF_HOME") or home_cache / "huggingface").expanduser(),
        )


@dataclass(frozen=True)
class FileRequirement:
    """One file a dimension opens: where, and which root / config key it hangs from."""

    path: Path
    root: str  # "cache_dir" | "torch_home" | "hf_home"

    @property
    def config_hint(self) -> str:
        env = {"cache_dir": "VBENCH_CACHE_DIR", "torch_home": "TORCH_HOME", "hf_home": "HF_HOME"}.get(self.root)
        return f"scorer.{self.root} / {env}" if env else f"scorer.{self.root}"  # slow-fast paths have no env var


@dataclass(frozen=True)
class DimensionStatus:
    dimension: str
    missing_files: tuple[FileRequirement, ...] = ()
    missing_modules: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def is_ready(self) -> bool:
        return not self.missing_files and not self.missing_modules

    def one_line(self) -> str:
        """`<dim>: ready` or `<dim>: missing <path> (set <key>)[; ...]`."""
        if self.is_ready:
            return f"{self.dimension}: ready" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        parts = [f"missing file {req.path} (set {req.config_hint})" for req in self.missing_files]
        parts += [f"missing Python package {name!r} ({_MODULE_HINTS.get(name, 'pip install it')})" for name in self.missing_modules]
        return f"{self.dimension}: " + "; ".join(parts)


_MODULE_HINTS = {
    "detectron2": "not on PyPI; build it from github.com/facebookresearch/detectron2 for your torch/CUDA",
    "clip": "pip install openai-clip",
    "pkg_resources": "pip install 'setuptools<81'",
    "pyiqa": "pip install pyiqa==0.1.10",
    "ftfy": "pip install ftfy",
    "decord": "pip install decord",
    "cv2": "pip install opencv-python-headless",
    "vbench": "pip install vbench==0.1.5",
    "transformers": "pip install transformers==4.33.2",
    "timm": "pip install 'timm>=0.9,<=1.0.12'",
    "scenedetect": "pip install scenedetect==0.7.2",
    "yaml": "pip install pyyaml",
}


def _bert_files(roots: WeightRoots, *, with_weights: bool) -> list[FileRequirement]:
    """bert-base-uncased in the huggingface_hub cache: `refs/main` names the snapshot that holds the files."""
    repo = roots.hf_home / _BERT_REPO_DIR
    ref = repo / "refs" / "main"
    names = ["config.json", "vocab.txt"]
    if not ref.is_file():
        return [FileRequirement(ref, "hf_home")] + [
            FileRequirement(repo / "snapshots" / "<refs/main>" / name, "hf_home") for name in names
        ]
    snapshot = repo / "snapshots" / ref.read_text().strip()
    files = [FileRequirement(snapshot / name, "hf_home") for name in names]
    if with_weights:
        # transformers 4.33 loads model.safetensors if present, else pytorch_model.bin; either satisfies the check.
        weights = snapshot / "model.safetensors"
        files.append(FileRequirement(weights if weights.is_file() else snapshot / "pytorch_model.bin", "hf_home"))
    return files


def required_files(dimension: str, roots: WeightRoots) -> list[FileRequirement]:
    """Every file vbench 0.1.5 opens (or would download) for `dimension` in local mode."""
    if dimension not in ALL_DIMENSIONS:
        raise ValueError(f"dimension must be one of {list(ALL_DIMENSIONS)}, got {dimension!r}")
    c = roots.cache_dir

    def cache(*parts: str) -> FileRequirement:
        return FileRequirement(c.joinpath(*parts), "cache_dir")

    if dimension == "temporal_flickering":
        return []
    if dimension == "subject_consistency":
        return [
            cache("dino_model", "facebookresearch_dino_main", "hubconf.py"),
            cache("dino_model", "dino_vitbase16_pretrain.pth"),
            FileRequirement(roots.torch_home / "hub" / "checkpoints" / "dino_vitbase16_pretrain.pth", "torch_home"),
        ]
    if dimension in ("background_consistency", "appearance_style"):
        return [cache("clip_model", "ViT-B-32.pt")]
    if dimension == "aesthetic_quality":
        return [cache("clip_model", "ViT-L-14.pt"), cache("aesthetic_model", "emb_reader", "sa_0_4_vit_l_14_linear.pth")]
    if dimension == "imaging_quality":
        return [cache("pyiqa_model", "musiq_spaq_ckpt-358bb6af.pth")]
    if dimension in GRIT_DIMENSIONS:
        return [cache("grit_model", "grit_b_densecap_objectdet.pth"), *_bert_files(roots, with_weights=False)]
    if dimension == "scene":
        return [cache("caption_model", "tag2text_swin_14m.pth"), *_bert_files(roots, with_weights=True)]
    if dimension == "human_action":
        return [cache("umt_model", "l16_ptk710_ftk710_ftk400_f16_res224.pth")]
    if dimension in _VICLIP_DIMENSIONS:
        return [cache("ViCLIP", "ViClip-InternVid-10M-FLT.pth"), cache("ViCLIP", "bpe_simple_vocab_16e6.txt.gz")]
    if dimension == "motion_smoothness":
        return [cache("amt_model", "amt-s.pth")]
    if dimension == "dynamic_degree":
        return [cache("raft_model", "models", "raft-things.pth")]
    raise AssertionError(f"unhandled dimension {dimension}")  # internal: ALL_DIMENSIONS is covered above


def required_modules(dimension: str) -> list[str]:
    """Top-level Python packages `vbench.<dimension>` imports beyond vbench's own declared dependencies that fail in practice."""
    modules = ["vbench", "decord", "cv2"]
    if dimension in _CLIP_DIMENSIONS or dimension in _VICLIP_DIMENSIONS or dimension == "human_action":
        modules += ["clip", "pkg_resources"]  # openai-clip imports pkg_resources (setuptools < 81)
    if dimension == "imaging_quality":
        modules.append("pyiqa")
    if dimension in _VICLIP_DIMENSIONS:
        modules.append("ftfy")
    if dimension in GRIT_DIMENSIONS:
        modules.append("detectron2")
    if dimension in GRIT_DIMENSIONS or dimension == "scene":
        modules.append("transformers")
    if dimension in ("human_action", "scene"):
        modules.append("timm")
    return modules


def _has_module(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def slow_fast_paths(
    cache_dir: str | os.PathLike,
    *,
    slow_fast_mapping_dir: str | os.PathLike | None = None,
    dinov2_path: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """(mapping table dir, DINOv2 ViT-B/14 checkpoint) for slow-fast; defaults under the vbench `cache_dir`.

    Neither ships with the vbench wheel: the tables are `vbench2_beta_long/configs/` of a VBench repo checkout, the
    checkpoint is `dinov2_vitb14_pretrain.pth` of facebookresearch/dinov2.
    """
    mapping_dir = Path(slow_fast_mapping_dir) if slow_fast_mapping_dir else Path(cache_dir) / "vbench2_beta_long" / "configs"
    dinov2 = Path(dinov2_path) if dinov2_path else Path(cache_dir) / "dinov2_model" / "dinov2_vitb14_pretrain.pth"
    return mapping_dir.expanduser(), dinov2.expanduser()


def _long_video_requirements(dim: str, roots: WeightRoots, *, slow_fast_dims: Sequence[str],
                             slow_fast_mapping_dir, dinov2_path) -> list[FileRequirement]:
    """Slow-fast files of `dim` (mapping table, DINOv2 checkpoint) when its fusion is on."""
    if dim not in slow_fast_dims:
        return []
    from tokentrim.scoring.long_video import MAPPING_TABLE_FILES

    mapping_dir, dinov2 = slow_fast_paths(roots.cache_dir, slow_fast_mapping_dir=slow_fast_mapping_dir,
                                          dinov2_path=dinov2_path)
    mapping_root = "slow_fast_mapping_dir" if slow_fast_mapping_dir else "cache_dir"
    dinov2_root = "dinov2_path" if dinov2_path else "cache_dir"
    return [FileRequirement(mapping_dir / MAPPING_TABLE_FILES[dim], mapping_root), FileRequirement(dinov2, dinov2_root)]


def check_dimensions(
    dimensions: Sequence[str] | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    torch_home: str | os.PathLike | None = None,
    hf_home: str | os.PathLike | None = None,
    slow_fast: bool = False,
    slow_fast_dimensions: Sequence[str] = ("subject_consistency",),
    slow_fast_mapping_dir: str | os.PathLike | None = None,
    dinov2_path: str | os.PathLike | None = None,
    scene_split: bool = False,
) -> dict[str, DimensionStatus]:
    """Per-dimension readiness (files present, packages importable) without importing vbench or downloading.

    With `slow_fast`, each dimension of `slow_fast_dimensions` also needs its VBench-Long mapping table and the
    DINOv2 ViT-B/14 checkpoint (`slow_fast_paths`) and timm / pyyaml; with `scene_split` every dimension needs
    PySceneDetect (`scenedetect`).
    """
    dims = list(ALL_DIMENSIONS if dimensions is None else dimensions)
    roots = WeightRoots.resolve(cache_dir=cache_dir, torch_home=torch_home, hf_home=hf_home)
    slow_fast_dims = tuple(slow_fast_dimensions) if slow_fast else ()
    status: dict[str, DimensionStatus] = {}
    for dim in dims:
        needed = required_files(dim, roots) + _long_video_requirements(
            dim, roots, slow_fast_dims=slow_fast_dims, slow_fast_mapping_dir=slow_fast_mapping_dir, dinov2_path=dinov2_path)
        files = tuple(req for req in needed if not req.path.is_file())
        module_names = required_modules(dim) + (["timm", "yaml"] if dim in slow_fast_dims else []) + (
            ["scenedetect"] if scene_split else [])
        modules = tuple(name for name in dict.fromkeys(module_names) if not _has_module(name))
        notes = ()
        if dim == "motion_smoothness":
            notes = ("scored with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: torch>=2.6 refuses the AMT pickle otherwise; "
                     "this lets that checkpoint run code, so use a trusted amt-s.pth",)
        status[dim] = DimensionStatus(dimension=dim, missing_files=files, missing_modules=modules, notes=notes)
    return status


def format_check(status: Mapping[str, DimensionStatus]) -> str:
    """The `tokentrim vbench-check` text: one line per dimension."""
    return "\n".join(item.one_line() for item in status.values())


def raise_if_missing(status: Mapping[str, DimensionStatus]) -> None:
    """Raise WeightsMissingError with the first not-ready dimension's one line."""
    for item in status.values():
        if not item.is_ready:
            raise WeightsMissingError(item.one_line())


@contextlib.contextmanager
def block_downloads(context: str) -> Iterator[None]:
    """While held, any subprocess, outgoing socket connection or torch.hub download raises DownloadBlockedError.

    vbench 0.1.5 shells out to `wget` / `git` / `unzip` and calls `urlretrieve` / `torch.hub` when a file is missing.
    `check_dimensions` catches that first; this guard is the backstop so a missed path fails in one line instead of
    hanging on a network call. Patched: `subprocess.Popen` (used by run/call/check_*), `socket.socket.connect(_ex)`,
    `torch.hub.download_url_to_file` (and timm's imported copy).
    """

    def refuse(*args: object, **kwargs: object) -> None:
        shown = " ".join(map(str, args[0])) if args and isinstance(args[0], (list, tuple)) else str(args[:1])
        raise DownloadBlockedError(f"{context}: vbench tried to fetch or run {shown[:200]!r}; a required file is missing")

    class _RefusedPopen(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: object, **kwargs: object) -> None:  # noqa: D107
            refuse(*args)

    def refuse_connect(self: socket.socket, address: object) -> None:
        refuse([f"connect {address}"])

    patches: list[tuple[object, str, object]] = [
        (subprocess, "Popen", _RefusedPopen),
        (socket.socket, "connect", refuse_connect),
        (socket.socket, "connect_ex", refuse_connect),
    ]
    if "torch.hub" in sys.modules:
        patches.append((sys.modules["torch.hub"], "download_url_to_file", refuse))
    for name in ("timm.models._hub", "timm.models.hub", "vbench.aesthetic_quality"):
        module = sys.modules.get(name)
        for attr in ("download_url_to_file", "urlretrieve"):
            if module is not None and hasattr(module, attr):
                patches.append((module, attr, refuse))
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)
