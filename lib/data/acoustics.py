"""Synthetic acoustics over real text: a speech-recognition task that needs no audio.

Section 07.5 decodes "speech" with a transformer encoder–decoder and a CTC head. The book ships no
speech data, so it makes some: every character c of the vocabulary gets a fixed random
*prototype* vector ``P[c] ∈ ℝ^F`` (F = 16), and a line of real text becomes a sequence of frames::

    frames = [P[c₁] + ε, P[c₁] + ε,  P[c₂] + ε, P[c₂] + ε, …]     ε ~ N(0, σ² I) fresh for every frame

Each character lasts :data:`DURATIONS` frames. The noise ``σ`` confuses nearby prototypes, which
a CTC head (one label per frame, no text context) cannot undo, while an autoregressive decoder
can use the text it has written so far.

Why durations are fixed at two frames: with durations drawn from {1, 2, 3} (speech-like: a
character's position in the frames drifts), the book's 2+2-layer decoder had not learned its
cross-attention alignment after 1,200 steps (greedy CER 27 % against the CTC head's 7.5 %, on
held-out lines at σ = 0.8). Learning that alignment is what real recognizers spend their
training on; the section is about decoding, so the data keep it easy. :func:`synthesize` takes
the range as an argument for experiments.

The text: the pydoc corpus (:func:`lib.zoo.zoo_data`, Python's documentation), every line cut
at spaces into pieces of 12–60 characters that contain a space and a letter. Training lines
come from the zoo's training split, evaluation lines from its held-out last 10 %. Everything is seeded: the prototypes by
``seed``, each split's durations and noise by ``seed`` and the split's name.

Token ids: the characters keep the tokenizer's ids ``0 … V−1``; :class:`Vocab` adds
``blank = V`` (CTC's "no label") and ``eos = V + 1`` (end of sentence, also the decoder's start
token, as in ESPnet), so both heads score ``V + 2`` classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lib.data.tokenizers import CharTokenizer
from lib.validation import check_int_in_range, check_positive_int, check_seed

__all__ = [
    "ACOUSTIC_NOISE",
    "N_FEATURES",
    "AcousticSplit",
    "Vocab",
    "acoustic_split",
    "acoustic_splits",
    "pad_frames",
    "prototypes",
    "synthesize",
    "text_lines",
]

N_FEATURES = 16
"""F, the size of one frame."""

ACOUSTIC_NOISE = 0.8
"""σ of the frame noise: tuned so that the zoo's CTC head misreads a few % of the characters."""

MIN_CHARS, MAX_CHARS = 12, 60
DURATIONS = (2, 2)
"""The range of frames per character: fixed at 2 (see the module docstring)."""


@dataclass(frozen=True)
class Vocab:
    """The ids both heads score: characters ``0 … n_chars−1``, then ``blank`` and ``eos``."""

    n_chars: int

    @property
    def blank(self) -> int:
        return self.n_chars

    @property
    def eos(self) -> int:
        return self.n_chars + 1

    @property
    def size(self) -> int:
        return self.n_chars + 2


@dataclass(frozen=True)
class AcousticSplit:
    """Utterances: ``frames[i]`` (T_i, F) float32 and ``texts[i]`` (L_i,) int64 character ids."""

    frames: list[torch.Tensor]
    texts: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.texts)


def _chunks(line: str) -> list[str]:
    """Cut a line at spaces into pieces of at most 60 characters (a longer word stands alone)."""
    pieces, current = [], ""
    for word in line.split():
        if current and len(current) + 1 + len(word) > MAX_CHARS:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return pieces + ([current] if current else [])


def text_lines(ids: np.ndarray, tokenizer: CharTokenizer) -> list[np.ndarray]:
    """Utterance texts of a tokenized text, as id arrays, in the order of the text.

    Every line is cut at spaces into pieces of at most 60 characters; the pieces with 12–60
    characters that contain a space and a letter are kept (runs of spaces become one).
    """
    if not isinstance(tokenizer, CharTokenizer):
        raise TypeError(f"tokenizer: expected a CharTokenizer, got {type(tokenizer).__name__}")
    pieces = [piece for line in tokenizer.decode(np.asarray(ids).tolist()).split("\n") for piece in _chunks(line)]
    keep = [
        piece for piece in pieces
        if MIN_CHARS <= len(piece) <= MAX_CHARS and " " in piece and any(c.isalpha() for c in piece)
    ]
    return [tokenizer.encode(piece) for piece in keep]


def prototypes(n_chars: int, seed: int = 0, n_features: int = N_FEATURES) -> np.ndarray:
    """One fixed random prototype per character, (n_chars, F) float64 ~ N(0, 1)."""
    check_positive_int("n_chars", n_chars)
    check_positive_int("n_features", n_features)
    check_seed(seed)
    return np.random.default_rng([seed, 1]).standard_normal((n_chars, n_features))


def synthesize(
    text: np.ndarray,
    protos: np.ndarray,
    rng: np.random.Generator,
    noise: float = ACOUSTIC_NOISE,
    durations: tuple[int, int] = DURATIONS,
) -> np.ndarray:
    """Frames of one utterance: each character's prototype for d frames, d uniform in the
    inclusive range ``durations``, plus N(0, σ²) noise.

    text (L,) ids < len(protos); protos (V, F) → frames (T, F) float32, d_min·L ≤ T ≤ d_max·L.
    """
    text = np.asarray(text)
    if text.ndim != 1 or text.size == 0 or not np.issubdtype(text.dtype, np.integer):
        raise ValueError(f"text: expected a non-empty 1-D array of character ids, got {text.dtype} {text.shape}")
    if text.min() < 0 or text.max() >= len(protos):
        raise ValueError(f"text: expected ids in [0, {len(protos)}), got values in [{text.min()}, {text.max()}]")
    if not noise >= 0:
        raise ValueError(f"noise: expected a number ≥ 0, got {noise!r}")
    if not 1 <= durations[0] <= durations[1]:
        raise ValueError(f"durations: expected (d_min, d_max) with 1 ≤ d_min ≤ d_max, got {durations!r}")
    frames_per_char = rng.integers(durations[0], durations[1] + 1, size=len(text))
    clean = np.repeat(protos[text], frames_per_char, axis=0)                     # (T, F)
    return (clean + noise * rng.standard_normal(clean.shape)).astype(np.float32)


SPLIT_STREAMS = {"train": 2, "held_out": 3}
"""Each split draws its durations and noise from its own seeded stream."""


def acoustic_split(
    ids: np.ndarray,
    tokenizer: CharTokenizer,
    which: str,
    *,
    seed: int = 0,
    noise: float = ACOUSTIC_NOISE,
    limit: int | None = None,
) -> AcousticSplit:
    """Utterances of one tokenized split (``which`` is "train" or "held_out"; see the module docstring).

    ``limit`` keeps only the first lines (tests and smoke builds). The same arguments always give
    the same frames.
    """
    if which not in SPLIT_STREAMS:
        raise ValueError(f"which: expected one of {', '.join(SPLIT_STREAMS)}, got {which!r}")
    check_seed(seed)
    if limit is not None:
        check_positive_int("limit", limit)
    lines = text_lines(ids, tokenizer)[:limit]
    protos, rng = prototypes(tokenizer.vocab_size, seed), np.random.default_rng([seed, SPLIT_STREAMS[which]])
    frames = [torch.from_numpy(synthesize(line, protos, rng, noise)) for line in lines]
    return AcousticSplit(frames, [torch.as_tensor(line, dtype=torch.long) for line in lines])


def acoustic_splits(
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    tokenizer: CharTokenizer,
    *,
    seed: int = 0,
    noise: float = ACOUSTIC_NOISE,
    max_train: int | None = None,
    max_val: int | None = None,
) -> tuple[AcousticSplit, AcousticSplit]:
    """(train, held-out) utterances from the two tokenized splits of a corpus: :func:`acoustic_split` twice."""
    return (
        acoustic_split(train_ids, tokenizer, "train", seed=seed, noise=noise, limit=max_train),
        acoustic_split(val_ids, tokenizer, "held_out", seed=seed, noise=noise, limit=max_val),
    )


def pad_frames(frames: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack utterances of different lengths: → (B, T_max, F) zero-padded, and lengths (B,) long."""
    if not frames:
        raise ValueError("frames: expected at least one (T, F) tensor, got an empty list")
    check_int_in_range("frames[0].ndim", frames[0].ndim, 2, 2)
    lengths = torch.tensor([len(f) for f in frames])
    return torch.nn.utils.rnn.pad_sequence(frames, batch_first=True), lengths
