"""GRiT-B DenseCap+ObjectDet stand-in for object_class, multiple_objects, color and spatial_relationship.

Needs detectron2 (not on PyPI; build recipe in results/vbench_grit/README.md): the model is built by vbench's own GRiT
code (`vbench/third_party/grit_src`: `setup_cfg(get_parser(...))` on `GRiT_B_DenseCap_ObjectDet.yaml`, then
detectron2's `build_model`), so the state dict has exactly the keys and shapes vbench's `DetectionCheckpointer` loads:
ViT-B/16 backbone + simple FPN, CenterNet proposals, a 3-stage cascade box head, mask head, and the 6-layer BERT-style
text decoder (vocab 30522). 322.5 M parameters, ~1.3 GB in fp32.

Files (under `roots`):
    <cache_dir>/grit_model/grit_b_densecap_objectdet.pth   torch.save({"model": state_dict}), detectron2's container
    <hf_home>/hub/models--bert-base-uncased/...             tokenizer stand-in (`standins.bert`, no weights)

Weights: the architecture's own initialisation under `torch.manual_seed(seed)`, with ONE change, recorded here and in
the README: the CenterNet agnostic-heatmap bias (`proposal_generator.centernet_head.agn_hm.bias`) is set from its
focal-loss training prior, -4.6 (sigmoid 0.01), to `PROPOSAL_BIAS`. With the prior, every proposal scores ~0.01, so
sqrt(box score x proposal score) never reaches vbench's 0.5 test threshold, no box is ever kept and the caption, box and
matching code of all four dimensions never runs (color then divides by zero). **The scores mean nothing.**
"""

from __future__ import annotations

from pathlib import Path

from tokentrim.scoring.standins.bert import write_bert_base_uncased
from tokentrim.scoring.weights import GRIT_DIMENSIONS, WeightRoots

__all__ = ["DIMENSIONS", "REQUIRES", "CHECKPOINT", "PROPOSAL_BIAS", "write"]

DIMENSIONS: tuple[str, ...] = GRIT_DIMENSIONS
REQUIRES: tuple[str, ...] = ("detectron2",)
CHECKPOINT = Path("grit_model") / "grit_b_densecap_objectdet.pth"
PROPOSAL_BIAS = 2.0  # agn_hm logit: proposal score sigmoid(2) ~ 0.88, so random box scores straddle the 0.5 threshold


def write(roots: WeightRoots, *, seed: int) -> list[Path]:
    """Write (or keep) the GRiT checkpoint and the bert-base-uncased tokenizer stand-in; return their paths."""
    written = write_bert_base_uncased(roots.hf_home, with_weights=False, seed=seed)
    path = roots.cache_dir / CHECKPOINT
    if not path.is_file():
        _save_checkpoint(_state_dict(roots, seed=seed), path)
    return [path, *written]


def _state_dict(roots: WeightRoots, *, seed: int) -> dict:
    """vbench's GRiT-B model, seeded, with the proposal prior set to `PROPOSAL_BIAS` (module docstring)."""
    try:
        import detectron2  # noqa: F401, PLC0415
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("GRiT stand-ins need detectron2, which is not on PyPI; build it from "
                                  "github.com/facebookresearch/detectron2 (results/vbench_grit/README.md)") from err
    import torch  # noqa: PLC0415

    from tokentrim.scoring.vbench_adapter import _import_vbench, _vbench_session  # noqa: PLC0415

    # The ROI heads load the bert tokenizer while being built: the same offline session as scoring finds our stand-in.
    with _vbench_session(roots, "object_class"):
        captions = _import_vbench("vbench.third_party.grit_src.image_dense_captions")
        from detectron2.modeling import build_model  # noqa: PLC0415

        cfg = captions.setup_cfg(captions.get_parser(torch.device("cpu"), model_weight=""))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(cfg)
    with torch.no_grad():
        model.proposal_generator.centernet_head.agn_hm.bias.fill_(PROPOSAL_BIAS)  # [1]
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _save_checkpoint(state: dict, path: Path) -> None:
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import torch  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"model": state}, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared weights cache is read by others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
