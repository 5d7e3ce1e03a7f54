"""Reading and writing the zoo's checkpoint files, checked against the entry's recipe.

A network's checkpoint ``NAME.pt`` is a ``torch.save`` of a plain dict (readable with
``weights_only=True``); an n-gram checkpoint ``NAME.json`` is the same dict in JSON. Both hold::

    {"format": "zoo-v1", "name": ..., "kind": "decoder" | "ssd" | "dmtd" | "seq2seq" | "ngram",
     "config": {...},                 # the model's full config dict, or {"n": ..., "discount": ...}
     "tokenizer": {...},              # CharTokenizer.to_dict()
     "state_dict": {...} | "model": {...}}   # the network's weights, or NGramModel.to_dict()

:data:`NETWORKS` says, per kind of network, which class it is, which full config a checkpoint must
carry, and whether its weights are stored in fp16.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lib.data import CharTokenizer, tokenizer_from_dict
from lib.models.decoder import Decoder, DecoderConfig
from lib.models.seq2seq import Seq2Seq, Seq2SeqConfig
from lib.models.ssd_lm import SSDLM, SSDLMConfig
from lib.ngram import NGramModel
from lib.zoo.registry import WEIGHTS_DIR, ZooEntry, get_entry, weights_path

__all__ = ["FORMAT", "NETWORKS", "Network", "expected_config", "load", "save"]

FORMAT = "zoo-v1"

Model = Decoder | NGramModel | SSDLM | Seq2Seq


@dataclass(frozen=True)
class Network:
    """How the zoo stores one kind of network: its class (with ``from_state(config, state_dict)``),
    the full config a checkpoint carries (from the entry and the tokenizer's size), fp16 or fp32 weights."""

    model: type
    config: Callable[[ZooEntry, int], dict[str, Any]]
    fp16: bool = False


NETWORKS: dict[str, Network] = {
    "decoder": Network(Decoder, lambda entry, v: DecoderConfig(vocab_size=v, **entry.config).to_dict()),
    "ssd": Network(SSDLM, lambda entry, v: SSDLMConfig(vocab_size=v, **entry.config).to_dict()),
    # a fine-tuned copy of its base decoder; fp16 halves the file (the build scores the rounded weights)
    "dmtd": Network(Decoder, lambda entry, v: expected_config(get_entry(entry.config["base"]), v), fp16=True),
    # the characters plus CTC's blank and eos
    "seq2seq": Network(Seq2Seq, lambda entry, v: Seq2SeqConfig(vocab_size=v + 2, **entry.config).to_dict(), fp16=True),
}
"""Every kind of zoo entry that is a torch network (the other kind, ``"ngram"``, is counts in JSON)."""


def expected_config(entry: ZooEntry, vocab_size: int) -> dict[str, Any]:
    """The full configuration a checkpoint of ``entry`` must carry, for a tokenizer of ``vocab_size``."""
    if entry.kind in NETWORKS:
        return NETWORKS[entry.kind].config(entry, vocab_size)
    return dict(entry.config)


def save(entry: ZooEntry, model: Model, tokenizer: CharTokenizer, directory: Path) -> Path:
    """Write ``model`` and its tokenizer as ``entry``'s checkpoint in ``directory``; return the path."""
    path = weights_path(entry, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "name": entry.name,
        "kind": entry.kind,
        "config": expected_config(entry, tokenizer.vocab_size),
        "tokenizer": tokenizer.to_dict(),
    }
    if entry.kind in NETWORKS:
        state = model.state_dict()
        if NETWORKS[entry.kind].fp16:
            state = {k: v.half() for k, v in state.items()}
        torch.save({**payload, "state_dict": state}, path)
    else:
        path.write_text(json.dumps({**payload, "model": model.to_dict()}))
    return path


def _read(path: Path, entry: ZooEntry, directory: Path) -> dict[str, Any]:
    """The checkpoint's dict, or an error that gives the command which writes the file."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no checkpoint for zoo entry {entry.name!r}; build it with: {entry.build_command(directory)}"
        )
    if entry.kind in NETWORKS:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    else:
        payload = json.loads(path.read_text())
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{path}: expected a zoo checkpoint (format {FORMAT!r}); rebuild it with: {entry.build_command(directory)}"
        )
    return payload


def _check_against_entry(
    path: Path, payload: dict[str, Any], entry: ZooEntry, vocab_size: int, directory: Path
) -> None:
    """Raise naming the first field where the file disagrees with the entry's recipe."""
    rebuild = f"rebuild it with: {entry.build_command(directory)}"
    for field in ("name", "kind"):
        if payload.get(field) != getattr(entry, field):
            expected = getattr(entry, field)
            raise ValueError(f"{path}: {field} {payload.get(field)!r} in the file, expected {expected!r}; {rebuild}")
    expected, stored = expected_config(entry, vocab_size), payload.get("config", {})
    for key in sorted(set(expected) | set(stored)):
        if stored.get(key) != expected.get(key):
            raise ValueError(
                f"{path}: config {key}={stored.get(key)!r} in the file, but zoo entry {entry.name!r} "
                f"expects {key}={expected.get(key)!r}; {rebuild}"
            )


def load(name: str, directory: Path | str = WEIGHTS_DIR) -> tuple[Model, CharTokenizer]:
    """The zoo's model ``name`` (in eval mode) and its tokenizer, read from ``directory``.

    The file's kind, configuration and tokenizer size must match the entry's recipe, so a stale or
    foreign checkpoint is refused with the command that rebuilds it.
    """
    directory = Path(directory)
    entry = get_entry(name, directory)
    path = weights_path(entry, directory)
    payload = _read(path, entry, directory)
    tokenizer = tokenizer_from_dict(payload["tokenizer"])
    _check_against_entry(path, payload, entry, tokenizer.vocab_size, directory)
    if entry.kind in NETWORKS:
        state = {k: v.float() for k, v in payload["state_dict"].items()}  # fp16 files compute in fp32
        return NETWORKS[entry.kind].model.from_state(payload["config"], state).eval(), tokenizer
    model = NGramModel.from_dict(payload["model"])
    stored = (model.n, model.discount, model.vocab_size)
    if stored != (entry.config["n"], entry.config["discount"], tokenizer.vocab_size):
        raise ValueError(
            f"{path}: the counts are of a model with (n, discount, vocab_size) = {stored}, not what the config "
            f"says; rebuild it with: {entry.build_command(directory)}"
        )
    return model, tokenizer
