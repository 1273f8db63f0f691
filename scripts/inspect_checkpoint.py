"""Say what a downloaded model file or folder is, and whether it loads strictly into the harness's models.

Usage:
    python scripts/inspect_checkpoint.py PATH [--no-ema]

PATH may be an SF/RF training checkpoint (`self_forcing_dmd.pt`, `rolling_forcing_dmd.pt`), a plain DiT state dict
(.pt/.pth/.safetensors), the Wan2.1 release folder, a diffusers folder, `Wan2.1_VAE.pth` or
`models_t5_umt5-xxl-enc-bf16.pth`. Nothing is built on real memory: expected layouts come from models on the meta
device. Exit code 0 if the file loads strictly into its model at the released size, 1 if not, 2 if unrecognised.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

import torch

from tokentrim.models.loading import (
    CheckpointSummary,
    KeyReport,
    compare_keys,
    describe_checkpoint,
    read_safetensors_folder,
    read_safetensors_shapes,
    read_tensor_file,
    strip_wrapper_prefixes,
)


def vae_report(state_dict: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare against the released Wan2.1 VAE (diffusers names, original names converted first)."""
    from tokentrim.models.vae import WanVAE, convert_original_vae_state_dict, is_original_vae_layout

    with torch.device("meta"):
        vae = WanVAE()
    if is_original_vae_layout(state_dict):
        state_dict = convert_original_vae_state_dict(state_dict, num_res_blocks=2, num_levels=4)
    return compare_keys(state_dict, {k: tuple(v.shape) for k, v in vae.autoencoder.state_dict().items()})


def t5_report(state_dict: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare against UMT5-XXL's encoder (HF names, Wan T5 names converted first)."""
    from tokentrim.models.text_encoder import WanTextEncoder, convert_wan_t5_state_dict, is_wan_t5_layout

    with torch.device("meta"):
        encoder = WanTextEncoder()
    if is_wan_t5_layout(state_dict):
        state_dict = convert_wan_t5_state_dict(state_dict)
    return compare_keys(state_dict, {k: tuple(v.shape) for k, v in encoder.encoder.state_dict().items()})


def _flat_tensors(path: str) -> dict[str, torch.Tensor]:
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        folder = target / "vae" if (target / "vae").is_dir() else target
        return read_safetensors_folder(folder, stem="diffusion_pytorch_model", config_key="PATH", shapes_only=True)
    raw = read_safetensors_shapes(target) if target.suffix == ".safetensors" else read_tensor_file(target)
    return strip_wrapper_prefixes(raw, source=path)  # type: ignore[arg-type]


def render(summary: CheckpointSummary, extra: KeyReport | None) -> list[str]:
    lines = [
        f"path:        {summary.path}",
        f"kind:        {summary.kind} - {summary.detail}",
        f"tensors:     {summary.num_tensors}",
        f"parameters:  {summary.num_params:,} ({summary.num_params / 1e9:.3f} B)",
        f"dtypes:      {', '.join(f'{k} x{v}' for k, v in sorted(summary.dtypes.items())) or '-'}",
    ]
    if summary.top_level_keys:
        lines.append(f"top keys:    {summary.top_level_keys}")
    if summary.dit_config is not None:
        lines.append(f"config:      {summary.dit_config}")
    report = summary.dit_report if summary.dit_report is not None else extra
    if report is not None:
        target = {"vae": "Wan2.1 VAE (AutoencoderKLWan)", "t5": "UMT5-XXL encoder"}.get(
            summary.kind, "CausalWanModel 1.3B (Wan2.1-T2V-1.3B)")
        verdict = "YES" if report.is_ok else "NO"
        lines.append(f"loads strictly into {target}: {verdict} - {report.summary(limit=5)}")
    lines.extend(f"note:        {note}" for note in summary.notes)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="checkpoint file or model folder")
    parser.add_argument("--no-ema", action="store_true", help="inspect 'generator' instead of 'generator_ema'")
    args = parser.parse_args(argv)
    summary = describe_checkpoint(args.path, use_ema=not args.no_ema)
    extra = None
    if summary.kind == "vae":
        extra = vae_report(_flat_tensors(args.path))
    elif summary.kind == "t5":
        extra = t5_report(_flat_tensors(args.path))
    print("\n".join(render(summary, extra)))
    if summary.kind == "unknown":
        return 2
    report = summary.dit_report if summary.dit_report is not None else extra
    return 0 if report is not None and report.is_ok else 1


if __name__ == "__main__":
    sys.exit(main())
