"""Two tokenizers with nothing to train: one token per character, or one token per UTF-8 byte.

Both encode a ``str`` to a 1-d ``np.ndarray`` of ``int64`` ids and decode any 1-d sequence of ids
(NumPy array, list, or torch tensor) back to a ``str``. Both save to a small JSON-able dict for
checkpoints (``to_dict``), read back by ``from_dict`` or :func:`tokenizer_from_dict`.

* :class:`CharTokenizer` — the vocabulary is the sorted set of characters of a text, so id ``k`` is
  the ``k``-th smallest code point. Exact round trip for any text made of those characters; a
  character outside the vocabulary is an error (never a silent "unknown" token).
* :class:`ByteTokenizer` — 256 ids, the bytes of the UTF-8 encoding. Any text round-trips; decoding
  an arbitrary id sequence (which may cut a character in half) replaces invalid bytes with U+FFFD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ByteTokenizer", "CharTokenizer", "tokenizer_from_dict"]


def _code_points(text: str) -> np.ndarray:
    """The Unicode code points of ``text``: shape (len(text),), uint32."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _check_text(name: str, text: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name}: expected a str, got {type(text).__name__}")


def _id_array(ids: Any, vocab_size: int) -> np.ndarray:
    """``ids`` as a 1-d int64 array, checked to lie in ``[0, vocab_size)``."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    array = np.asarray(ids)
    if array.size == 0:
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"ids: expected integer token ids, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"ids: expected a 1-d sequence of token ids, got shape {array.shape}")
    outside = (array < 0) | (array >= vocab_size)
    if outside.any():
        where = int(np.argmax(outside))
        raise ValueError(f"ids: expected token ids in [0, {vocab_size - 1}], got {array[where]} at index {where}")
    return array.astype(np.int64)


@dataclass(frozen=True)
class CharTokenizer:
    """One token per character; ``chars`` is the vocabulary, distinct characters in sorted order.

    Id ``k`` is ``chars[k]``. Build one with :meth:`from_text`.
    """

    chars: str

    def __post_init__(self) -> None:
        _check_text("chars", self.chars)
        if not self.chars or list(self.chars) != sorted(set(self.chars)):
            raise ValueError(f"chars: expected distinct characters in sorted order, got {self.chars[:40]!r}")

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is every character that occurs in ``text``."""
        _check_text("text", text)
        if not text:
            raise ValueError("text: expected at least one character, got ''")
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        """Number of ids, ``len(chars)``."""
        return len(self.chars)

    def encode(self, s: str) -> np.ndarray:
        """Ids of the characters of ``s``: shape (len(s),), int64. Found by binary search in the sorted vocabulary."""
        _check_text("s", s)
        vocabulary = _code_points(self.chars)
        points = _code_points(s)
        ids = np.searchsorted(vocabulary, points)
        known = vocabulary[np.minimum(ids, self.vocab_size - 1)] == points
        if not known.all():
            where = int(np.argmin(known))
            raise ValueError(
                f"s: expected characters of the tokenizer's {self.vocab_size}-character vocabulary, "
                f"got {s[where]!r} (U+{ord(s[where]):04X}) at index {where}"
            )
        return ids.astype(np.int64)

    def decode(self, ids: Any) -> str:
        """The text of 1-d ``ids`` (array, list or tensor); every id must lie in ``[0, vocab_size)``."""
        points = _code_points(self.chars)[_id_array(ids, self.vocab_size)]
        return points.astype("<u4").tobytes().decode("utf-32-le")

    def to_dict(self) -> dict[str, str]:
        """``{"kind": "char", "chars": ...}``: everything :meth:`from_dict` needs, JSON-able."""
        return {"kind": "char", "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        """The tokenizer saved by :meth:`to_dict`."""
        _check_kind(d, "char")
        return cls(d.get("chars"))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


@dataclass(frozen=True)
class ByteTokenizer:
    """One token per byte of the UTF-8 encoding: 256 ids, no vocabulary to build."""

    @property
    def vocab_size(self) -> int:
        """Always 256."""
        return 256

    def encode(self, s: str) -> np.ndarray:
        """The UTF-8 bytes of ``s`` as ids: shape (len(s.encode()),), int64."""
        _check_text("s", s)
        return np.frombuffer(s.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Any) -> str:
        """The text of 1-d ``ids`` in ``[0, 256)``; byte runs that are not valid UTF-8 become U+FFFD."""
        return _id_array(ids, 256).astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, str]:
        """``{"kind": "byte"}``, JSON-able."""
        return {"kind": "byte"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ByteTokenizer:
        """The tokenizer saved by :meth:`to_dict`."""
        _check_kind(d, "byte")
        return cls()


_KINDS = {"char": CharTokenizer, "byte": ByteTokenizer}


def _check_kind(d: Any, kind: str) -> None:
    if not isinstance(d, dict) or d.get("kind") != kind:
        got = d.get("kind") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"tokenizer dict: expected kind {kind!r}, got {got!r}")


def tokenizer_from_dict(d: dict[str, Any]) -> CharTokenizer | ByteTokenizer:
    """Whichever tokenizer ``d`` (from a ``to_dict``, e.g. in a checkpoint) describes."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in _KINDS:
        raise ValueError(f"tokenizer dict: expected kind one of {', '.join(sorted(_KINDS))}, got {kind!r}")
    return _KINDS[kind].from_dict(d)
