"""GRiT-B DenseCap+ObjectDet stand-in for object_class, multiple_objects, color and spatial_relationship.

Needs detectron2 (not on PyPI; build recipe in results/vbench_grit/README.md): the model is built by vbench's own GRiT
code (`vbench/third_party/grit_src`: `setup_cfg(get_parser(...))` on `GRiT_B_DenseCap_ObjectDet.yaml`, then
detectron2's `build_model`), so the state dict has exactly the keys and shapes vbench's `DetectionCheckpointer` loads:
ViT-B/16 backbone + simple FPN, CenterNet proposals, a 3-stage cascade box head, mask head, and the 6-layer BERT-style
text decoder (vocab 30522). 322.5 M parameters, ~1.3 GB in fp32.

Files (under `roots`):
    <cache_dir>/grit_model/grit_b_densecap_objectdet.pth   torch.save({"model": state_dict}), detectron2's container
    <hf_home>/hub/models--bert-base-uncased/...             tokenizer stand-in (`standins.bert`, no weights)

Weights: the architecture's own initialisation under `torch.manual_seed(seed)`, with changes to init values only (no
code, no shape), recorded here and in results/vbench_grit/README.md. **The scores mean nothing.**
1. Proposals. The CenterNet agnostic-heatmap bias (`proposal_generator.centernet_head.agn_hm.bias`) is set from its
   focal-loss training prior, -4.6 (sigmoid 0.01), to `PROPOSAL_BIAS`. With the prior every proposal scores ~0.01, so
   sqrt(box score x proposal score) never reaches vbench's 0.5 test threshold, no box is kept and the caption, box and
   matching code of all four dimensions never runs (color then divides by zero). At 2.0: 4-7 boxes per frame on the
   96x160 test videos of `scripts/vbench_grit_standins.py` (measured 2026-12-04; 0.0 gives the same counts).
2. Captions (2026-12-04: before this, random captions never chose [SEP] and ran the decoder's full 40 steps, twice per
   box, the GRiT run never finished on 2 CPU cores). The text head's output layer is tied to the word embeddings, and
   with random weights the hidden state at a position correlates with that position's input embedding (the word the
   decoder just read scores ~6.5 against ~0.55 std for the rest; vbench bans repeating it). So:
   - `[SEP]`'s embedding row is the position-1 embedding: after the first caption word (position 1) [SEP] scores like
     a repeat (~6.5), after the task token (position 0) it does not: every caption is ONE word, 3 decoder steps;
   - `CAPTION_WORDS` (the object and colour words of the first `PROMPTS_PER_DIMENSION` VBench prompts of each GRiT
     dimension) get `+WORD_BIAS` on the output bias, so the caption is a word the dimensions can match;
   - the task begin tokens ([CLS] = ObjectDet, id 104 = DenseCap) get `-TASK_TOKEN_BIAS`: position 0 would otherwise
     echo the task token.
   With 2. alone, which word a box gets was decided by the random network (box features): on the test videos the
   kept boxes read "bird", "motorcycle" and "green". 3. fixes it.
3. Colour (2026-12-04: with 2. alone no box was ever captioned with the colour prompt's object, and vbench's color
   divided by zero on every video, ours and theirs alike). The ObjectDet begin token's embedding row is set to that of
   the first colour prompt's object word ("bicycle" of "a red bicycle") and the DenseCap begin token's row to its
   colour word ("red"): position 0 then echoes them (the same ~6.5, plus `WORD_BIAS`; the begin tokens themselves keep
   `-TASK_TOKEN_BIAS`), so every kept box reads "bicycle" to ObjectDet and "red" to DenseCap (vbench's DenseCap
   loader, used by color; its ObjectDet loader, used by the other three, begins both decoders with [CLS], so there
   every caption is "bicycle"). On the script's videos: color 1.0 ("a red bicycle") and 0.0 ("a green bicycle"),
   spatial_relationship 1.0 ("a bicycle on the left of a car"), object_class and multiple_objects 0.
"""

from __future__ import annotations

from pathlib import Path

from tokentrim.scoring.standins import bert
from tokentrim.scoring.standins.bert import write_bert_base_uncased
from tokentrim.scoring.weights import GRIT_DIMENSIONS, WeightRoots

__all__ = ["DIMENSIONS", "REQUIRES", "CHECKPOINT", "PROPOSAL_BIAS", "PROMPTS_PER_DIMENSION", "WORD_BIAS",
           "TASK_TOKEN_BIAS", "caption_words", "colour_echo", "write"]

DIMENSIONS: tuple[str, ...] = GRIT_DIMENSIONS
REQUIRES: tuple[str, ...] = ("detectron2",)
CHECKPOINT = Path("grit_model") / "grit_b_densecap_objectdet.pth"
PROPOSAL_BIAS = 2.0  # agn_hm logit: proposal score sigmoid(2) ~ 0.88, so random box scores straddle the 0.5 threshold
PROMPTS_PER_DIMENSION = 2  # caption words come from the first 2 VBench prompts of each GRiT dimension (the script's)
WORD_BIAS = 4.0  # output-bias boost of CAPTION_WORDS: above the ~2.3 max of 30522 random logits, below [SEP]'s ~6.5
TASK_TOKEN_BIAS = 10.0  # output-bias penalty of the task begin tokens (never a caption word)
_TASK_TOKENS = (101, 104)  # GRiT's begin tokens: [CLS] for ObjectDet (train_task[0]), 103 + 1 for DenseCap


def colour_echo() -> tuple[str, str]:
    """(object, colour) of the first colour prompt: what ObjectDet and DenseCap echo at position 0 (docstring 3)."""
    from tokentrim.scoring.prompts import load_vbench_suite  # noqa: PLC0415

    entry = next(entry for entry in load_vbench_suite() if "color" in entry.dimensions)
    return entry.prompt.split()[-1], entry.auxiliary_info["color"]["color"]


def caption_words() -> list[str]:
    """Object and colour words the four dimensions match, from the first `PROMPTS_PER_DIMENSION` prompts of each."""
    from tokentrim.scoring.prompts import load_vbench_suite  # noqa: PLC0415

    words: list[str] = []
    for dimension in DIMENSIONS:
        entries = [entry for entry in load_vbench_suite() if dimension in entry.dimensions][:PROMPTS_PER_DIMENSION]
        for entry in entries:
            info = entry.auxiliary_info[dimension]
            if dimension == "spatial_relationship":
                info = info["spatial_relationship"]
                words += [info["object_a"], info["object_b"]]
            elif dimension == "color":
                words += [info["color"], entry.prompt.split()[-1]]  # "a red bicycle": colour + object
            else:
                words += [word.strip() for word in info["object"].split(" and ")]
    return list(dict.fromkeys(words))


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

    from tokentrim.scoring.vbench_env import import_vbench, vbench_session  # noqa: PLC0415

    # The ROI heads load the bert tokenizer while being built: the same offline session as scoring finds our stand-in.
    with vbench_session(roots, "object_class"):
        captions = import_vbench("vbench.third_party.grit_src.image_dense_captions")
        from detectron2.modeling import build_model  # noqa: PLC0415

        cfg = captions.setup_cfg(captions.get_parser(torch.device("cpu"), model_weight=""))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(cfg)
    vocab = {piece: index for index, piece in enumerate(bert.stand_in_vocab())}
    words = [vocab[word] for word in caption_words()]  # KeyError = a multi-piece word: pick single-token prompts
    with torch.no_grad():
        model.proposal_generator.centernet_head.agn_hm.bias.fill_(PROPOSAL_BIAS)  # [1]
        head = model.roi_heads.text_decoder.textual  # shared by text_decoder and text_decoder_det
        head.embedding.words.weight[vocab["[SEP]"]] = head.embedding.positions.weight[1]  # [768]; tied to output.weight
        head.output.bias[words] += WORD_BIAS  # [30522]
        head.output.bias[list(_TASK_TOKENS)] -= TASK_TOKEN_BIAS
        for task_token, word in zip(_TASK_TOKENS, colour_echo()):  # [CLS] (ObjectDet) -> object, 104 -> colour
            head.embedding.words.weight[task_token] = head.embedding.words.weight[vocab[word]].clone()  # [768]
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
