"""EDA text augmentation (Wei & Zou, 2019), CleanCLIP's text view: synonym replacement, random
insertion, random swap and random deletion, each changing about ``alpha`` of a caption's words.

Synonyms come from a small built-in table (``SYNONYMS``) covering the embedded world's caption
vocabulary and common caption words, so no WordNet download is needed; a word without an entry
is left alone by replacement and insertion. Randomness comes from a ``torch.Generator``: the same
seed gives the same augmentations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Symmetric groups of interchangeable words; every member maps to the others.
_SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("photo", "picture", "image", "snapshot"),
    ("small", "little", "tiny"),
    ("large", "big", "huge"),
    ("background", "backdrop", "setting"),
    ("plain", "simple", "uniform"),
    ("striped", "banded", "lined"),
    ("checkered", "chequered", "tiled"),
    ("dotted", "spotted", "speckled"),
    ("mottled", "blotchy", "patchy"),
    ("circle", "disc", "round"),
    ("square", "box", "block"),
    ("triangle", "wedge"),
    ("star", "asterisk"),
    ("cross", "plus"),
    ("ring", "hoop", "loop"),
    ("crescent", "sickle"),
    ("heart", "valentine"),
    ("arrow", "pointer"),
    ("hourglass", "timer"),
    ("red", "crimson", "scarlet"),
    ("green", "emerald"),
    ("blue", "azure", "navy"),
    ("yellow", "golden", "lemon"),
    ("purple", "violet", "lilac"),
    ("orange", "amber", "tangerine"),
    ("white", "ivory", "snowy"),
    ("cyan", "turquoise", "aqua"),
    ("over", "above", "upon"),
    ("on", "upon", "atop"),
    ("shows", "depicts", "displays"),
    ("centered", "centred", "central"),
    ("sign", "signal", "marker"),
)
SYNONYMS: dict[str, tuple[str, ...]] = {}
for _group in _SYNONYM_GROUPS:
    for _word in _group:
        SYNONYMS[_word] = tuple(
            dict.fromkeys(SYNONYMS.get(_word, ()) + tuple(w for w in _group if w != _word))
        )
STOP_WORDS = frozenset(
    {"a", "an", "the", "of", "in", "on", "over", "with", "and", "to", "at", "by", "for", "is"}
)
OPERATIONS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")


def _pick(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def _count(words: Sequence[str], alpha: float) -> int:
    return max(1, int(alpha * len(words)))


def synonym_replacement(words: list[str], alpha: float, generator: torch.Generator) -> list[str]:
    """Replace ``max(1, alpha * len)`` distinct non-stop words that have synonyms
    by a random synonym."""
    out = list(words)
    candidates = [
        i for i, w in enumerate(out) if w.lower() not in STOP_WORDS and w.lower() in SYNONYMS
    ]
    order = torch.randperm(len(candidates), generator=generator).tolist()
    for position in [candidates[k] for k in order[: _count(words, alpha)]]:
        options = SYNONYMS[out[position].lower()]
        out[position] = options[_pick(len(options), generator)]
    return out


def random_insertion(words: list[str], alpha: float, generator: torch.Generator) -> list[str]:
    """Insert a synonym of a random word at a random position, ``max(1, alpha * len)`` times."""
    out = list(words)
    for _ in range(_count(words, alpha)):
        candidates = [w for w in out if w.lower() in SYNONYMS]
        if not candidates:
            break
        options = SYNONYMS[candidates[_pick(len(candidates), generator)].lower()]
        out.insert(_pick(len(out) + 1, generator), options[_pick(len(options), generator)])
    return out


def random_swap(words: list[str], alpha: float, generator: torch.Generator) -> list[str]:
    """Swap two random positions, ``max(1, alpha * len)`` times."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(_count(words, alpha)):
        i, j = torch.randperm(len(out), generator=generator)[:2].tolist()
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, generator: torch.Generator) -> list[str]:
    """Delete each word with probability ``p``; one random word survives if all would go."""
    if len(words) <= 1:
        return list(words)
    keep = torch.rand(len(words), generator=generator) >= p
    out = [w for w, k in zip(words, keep.tolist(), strict=True) if k]
    return out or [words[_pick(len(words), generator)]]


def eda(caption: str, generator: torch.Generator, *, alpha: float = 0.1) -> str:
    """One EDA view of ``caption``:
    one of the four operations, chosen at random, at strength ``alpha``."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"eda.alpha: expected a share in [0, 1], got {alpha!r}")
    words = caption.split()
    operation = OPERATIONS[_pick(len(OPERATIONS), generator)]
    if operation == "synonym_replacement":
        words = synonym_replacement(words, alpha, generator)
    elif operation == "random_insertion":
        words = random_insertion(words, alpha, generator)
    elif operation == "random_swap":
        words = random_swap(words, alpha, generator)
    else:
        words = random_deletion(words, alpha, generator)
    return " ".join(words)


def eda_batch(
    captions: Sequence[str], generator: torch.Generator, *, alpha: float = 0.1
) -> list[str]:
    """One EDA view per caption."""
    return [eda(c, generator, alpha=alpha) for c in captions]
