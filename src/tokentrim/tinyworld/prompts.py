"""TinyWorld prompts: a small grammar, its parser/describer, a word tokenizer, and the train/held-out split.

Grammar (canonical form; ``describe(parse(p)) == p`` for canonical ``p`` and ``parse(describe(s)) == s`` always)::

    prompt     := object " over a " background ( ", " object ){0,2}
    object     := "a " [size " "] colour " " shape " " motion          (size "medium" is written as no word)
    size       := "small" | "large"
    colour     := "red" | "green" | "blue" | "yellow" | "magenta" | "cyan" | "white"
    shape      := "circle" | "square" | "triangle" | "diamond"
    motion     := "stays still" | "bounces left and right" | "bounces up and down" | "bounces around"
                | "moves in a circle"
    background := ["slowly panning "] bgcolour [" gradient"] " background"   (panning and gradient exclude each other)
    bgcolour   := "grey" | "dark blue" | "dark green" | "dark red" | "dark purple"

Example: ``"a red circle bounces left and right over a dark blue background, a small green square stays still"``.

Held-out split: an object's (colour, shape, motion) triple is held out iff ``(c + 2 s + 3 m) mod 7 == 0`` (indices in
``OBJECT_COLOURS``, ``SHAPES``, ``MOTIONS`` order). With 7 colours this holds out exactly one colour per
(shape, motion) pair and at most one motion per (colour, shape) and one shape per (colour, motion): every word and every
pair of attributes is seen in training, 20 of the 140 triples are not. A scene is "heldout" iff any of its objects has
a held-out triple, so the two splits are disjoint by construction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from tokentrim.tinyworld.world import (
    BACKGROUND_COLOURS,
    BACKGROUND_KINDS,
    MOTIONS,
    OBJECT_COLOURS,
    SHAPES,
    SIZES,
    BackgroundSpec,
    ObjectSpec,
    Scene,
)

logger = logging.getLogger(__name__)

MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "static": ("stays", "still"),
    "bounce_horizontal": ("bounces", "left", "and", "right"),
    "bounce_vertical": ("bounces", "up", "and", "down"),
    "bounce_diagonal": ("bounces", "around"),
    "orbit": ("moves", "in", "a", "circle"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small",), "medium": (), "large": ("large",)}

# Token ids: 0 is padding; the order is fixed forever (a trained text encoder depends on it).
PAD_ID: int = 0
VOCABULARY: tuple[str, ...] = (
    "<pad>", ",", "a", "over", "background",
    "small", "large",
    "red", "green", "blue", "yellow", "magenta", "cyan", "white",
    "circle", "square", "triangle", "diamond",
    "stays", "still", "bounces", "left", "and", "right", "up", "down", "around", "moves", "in",
    "slowly", "panning", "gradient", "grey", "dark", "purple",
)
WORD_TO_ID: dict[str, int] = {word: i for i, word in enumerate(VOCABULARY)}
# Longest prompt: 3 objects of 9 words + 7 background words + 2 commas = 36 tokens; 40 leaves room.
MAX_LENGTH: int = 40

SPLITS: tuple[str, ...] = ("train", "heldout")


# ----------------------------------------------------------------------------------------------------------------
# Words
# ----------------------------------------------------------------------------------------------------------------


def words_of(prompt: str) -> list[str]:
    """Lower-case word list of a prompt; a comma is its own word, a trailing period is dropped."""
    text = prompt.strip().lower().rstrip(".").replace(",", " , ")
    return text.split()


def check_vocabulary(words: Sequence[str]) -> None:
    """Raise one ValueError listing every unknown word and the whole vocabulary."""
    unknown = sorted({w for w in words if w not in WORD_TO_ID or w == "<pad>"})
    if unknown:
        raise ValueError(f"prompt has words outside the TinyWorld vocabulary: {unknown}; vocabulary: {list(VOCABULARY[1:])}")


# ----------------------------------------------------------------------------------------------------------------
# Parse / describe
# ----------------------------------------------------------------------------------------------------------------


class _Reader:
    """Cursor over a word list with expectation errors that quote the prompt."""

    def __init__(self, words: list[str], prompt: str) -> None:
        self.words, self.prompt, self.pos = words, prompt, 0

    def peek(self, offset: int = 0) -> str | None:
        i = self.pos + offset
        return self.words[i] if i < len(self.words) else None

    def take(self, expected: Sequence[str], what: str) -> str:
        word = self.peek()
        if word not in expected:
            got = "end of prompt" if word is None else repr(word)
            raise ValueError(f"prompt {self.prompt!r}: expected {what} ({' | '.join(expected)}) at word {self.pos}, got {got}")
        self.pos += 1
        return word

    def take_phrase(self, phrases: dict[str, tuple[str, ...]], what: str) -> str:
        for key, phrase in phrases.items():
            if phrase and tuple(self.words[self.pos : self.pos + len(phrase)]) == phrase:
                self.pos += len(phrase)
                return key
        options = [" ".join(p) for p in phrases.values() if p]
        got = " ".join(self.words[self.pos : self.pos + 4]) or "end of prompt"
        raise ValueError(f"prompt {self.prompt!r}: expected {what} ({' | '.join(options)}) at word {self.pos}, got {got!r}")


def _parse_object(reader: _Reader) -> ObjectSpec:
    reader.take(["a"], "an object starting with 'a'")
    size = "medium"
    if reader.peek() in ("small", "large"):
        size = reader.take(["small", "large"], "size")
    colour = reader.take(list(OBJECT_COLOURS), "an object colour")
    shape = reader.take(list(SHAPES), "a shape")
    motion = reader.take_phrase(MOTION_PHRASES, "a motion")
    return ObjectSpec(shape=shape, colour=colour, size=size, motion=motion)


def _parse_background(reader: _Reader) -> BackgroundSpec:
    reader.take(["over"], "'over a ... background'")
    reader.take(["a"], "'a'")
    kind = "solid"
    if reader.peek() == "slowly":
        reader.take(["slowly"], "'slowly panning'")
        reader.take(["panning"], "'panning'")
        kind = "pan"
    if reader.peek() == "dark":
        reader.take(["dark"], "'dark'")
        colour = "dark " + reader.take([c.split()[1] for c in BACKGROUND_COLOURS if c.startswith("dark ")], "a dark colour")
    else:
        colour = reader.take([c for c in BACKGROUND_COLOURS if " " not in c] + ["dark"], "a background colour")
    if reader.peek() == "gradient":
        if kind == "pan":
            raise ValueError(f"prompt {reader.prompt!r}: a background is either 'slowly panning' or 'gradient', not both")
        reader.take(["gradient"], "'gradient'")
        kind = "gradient"
    reader.take(["background"], "'background'")
    return BackgroundSpec(colour=colour, kind=kind)


def parse(prompt: str) -> Scene:
    """Parse a TinyWorld prompt into its ground-truth :class:`Scene`.

    Raises:
        ValueError: one line listing unknown words and the vocabulary, or naming the first grammar violation.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    words = words_of(prompt)
    check_vocabulary(words)
    reader = _Reader(words, prompt)
    objects = [_parse_object(reader)]
    background = _parse_background(reader)
    while reader.peek() is not None:
        reader.take([","], "',' before the next object")
        objects.append(_parse_object(reader))
    if len(objects) > 3:
        raise ValueError(f"prompt {prompt!r}: at most 3 objects, got {len(objects)}")
    return Scene(background=background, objects=tuple(objects))


def describe_object(obj: ObjectSpec) -> str:
    return " ".join(["a", *SIZE_WORDS[obj.size], obj.colour, obj.shape, *MOTION_PHRASES[obj.motion]])


def describe_background(background: BackgroundSpec) -> str:
    words = ["over", "a"]
    if background.kind == "pan":
        words += ["slowly", "panning"]
    words.append(background.colour)
    if background.kind == "gradient":
        words.append("gradient")
    words.append("background")
    return " ".join(words)


def describe(scene: Scene) -> str:
    """Canonical prompt of a scene (inverse of :func:`parse`)."""
    first, *rest = scene.objects
    head = describe_object(first) + " " + describe_background(scene.background)
    return ", ".join([head, *(describe_object(obj) for obj in rest)])


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------------


class Tokenizer:
    """Word-level tokenizer of the grammar: one id per word in :data:`VOCABULARY`, right-padded with ``PAD_ID = 0``.

    Args:
        max_length: ``L``, the fixed output length (default 40 >= longest prompt, 36 tokens).
    """

    def __init__(self, *, max_length: int = MAX_LENGTH) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = max_length
        self.vocabulary = VOCABULARY
        self.pad_id = PAD_ID

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def encode(self, prompt: str) -> list[int]:
        """Ids of one prompt, padded to ``max_length``; raises ValueError on unknown words or if too long."""
        words = words_of(prompt)
        check_vocabulary(words)
        if len(words) > self.max_length:
            raise ValueError(f"prompt {prompt!r} has {len(words)} tokens, more than max_length={self.max_length}")
        ids = [WORD_TO_ID[w] for w in words]
        return ids + [self.pad_id] * (self.max_length - len(ids))

    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch encode.

        Returns:
            ids ``[B, L]`` int64 and attention mask ``[B, L]`` bool (True on real tokens).
        """
        ids = torch.tensor([self.encode(p) for p in prompts], dtype=torch.long)  # [B, L]
        return ids, ids != self.pad_id

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Words of the non-pad ids, joined back into a prompt (commas re-attached)."""
        words = [self.vocabulary[int(i)] for i in ids if int(i) != self.pad_id]
        return " ".join(words).replace(" ,", ",")


# ----------------------------------------------------------------------------------------------------------------
# Train / held-out split and sampling
# ----------------------------------------------------------------------------------------------------------------


def is_heldout_triple(colour: str, shape: str, motion: str) -> bool:
    """True iff the (colour, shape, motion) combination is reserved for evaluation (rule in the module docstring)."""
    c = list(OBJECT_COLOURS).index(colour)
    s = SHAPES.index(shape)
    m = MOTIONS.index(motion)
    return (c + 2 * s + 3 * m) % 7 == 0


HELDOUT_TRIPLES: tuple[tuple[str, str, str], ...] = tuple(
    (c, s, m) for c in OBJECT_COLOURS for s in SHAPES for m in MOTIONS if is_heldout_triple(c, s, m)
)


def split_of(scene: Scene) -> str:
    """"heldout" if any object's (colour, shape, motion) triple is held out, else "train"."""
    held = any(is_heldout_triple(o.colour, o.shape, o.motion) for o in scene.objects)
    return "heldout" if held else "train"


def _choice(generator: torch.Generator, options: Sequence):
    return options[int(torch.randint(len(options), (), generator=generator))]


def sample_scene(generator: torch.Generator, *, split: str = "train", num_objects: int | None = None) -> Scene:
    """Draw a random scene of the given split (deterministic given the generator state).

    Args:
        generator: CPU ``torch.Generator``.
        split: ``"train"`` (every object triple in train) or ``"heldout"`` (at least one held-out triple).
        num_objects: 1-3; drawn uniformly when None.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if num_objects is None:
        num_objects = int(torch.randint(1, 4, (), generator=generator))
    if not 1 <= num_objects <= 3:
        raise ValueError(f"num_objects must be 1 to 3, got {num_objects}")
    background = BackgroundSpec(
        colour=_choice(generator, list(BACKGROUND_COLOURS)), kind=_choice(generator, BACKGROUND_KINDS)
    )
    heldout_slot = int(torch.randint(num_objects, (), generator=generator)) if split == "heldout" else -1
    objects: list[ObjectSpec] = []
    for slot in range(num_objects):
        used = {o.colour for o in objects}
        size = _choice(generator, list(SIZES))
        if slot == heldout_slot:
            triples = [t for t in HELDOUT_TRIPLES if t[0] not in used]
            colour, shape, motion = _choice(generator, triples)
        else:
            colour = _choice(generator, [c for c in OBJECT_COLOURS if c not in used])
            pairs = [(s, m) for s in SHAPES for m in MOTIONS]
            if split == "train":
                pairs = [(s, m) for s, m in pairs if not is_heldout_triple(colour, s, m)]
            shape, motion = _choice(generator, pairs)
        objects.append(ObjectSpec(shape=shape, colour=colour, size=size, motion=motion))
    return Scene(background=background, objects=tuple(objects))


def prompt_set(*, split: str = "heldout", count: int = 32, seed: int = 0, num_objects: int | None = None) -> list[str]:
    """``count`` distinct canonical prompts of a split, deterministic from ``seed`` (used to write conf/prompts)."""
    generator = torch.Generator().manual_seed(seed)
    prompts: list[str] = []
    for _ in range(1000 * count):
        prompt = describe(sample_scene(generator, split=split, num_objects=num_objects))
        if prompt not in prompts:
            prompts.append(prompt)
        if len(prompts) == count:
            return prompts
    raise ValueError(f"could not draw {count} distinct {split} prompts with num_objects={num_objects}")


# ---------------------------------------------------------------------------------------------- guidance
NULL_PROMPT = ""  # the unconditional prompt of classifier-free guidance (all padding: zero text states)


def guidance_prompts(prompts: Sequence[str], guided: bool) -> list[str]:
    """The text rows a sampler expects: the prompts, then, if it is guided (`SelfForcingConfig.guided`), one null
    prompt per prompt."""
    return list(prompts) + ([NULL_PROMPT] * len(prompts) if guided else [])


def drop_prompts(prompts: Sequence[str], probability: float, generator: torch.Generator) -> list[str]:
    """Prompt dropout for classifier-free guidance: each prompt becomes the null prompt with `probability`."""
    if probability <= 0:
        return list(prompts)
    dropped = torch.rand(len(prompts), generator=generator) < probability  # [B]
    return [NULL_PROMPT if d else p for p, d in zip(prompts, dropped.tolist())]
