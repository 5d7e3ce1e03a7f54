"""Reading and writing the zoo's checkpoint files, checked against the entry's recipe.

A decoder checkpoint ``NAME.pt`` is a ``torch.save`` of a plain dict (readable with
``weights_only=True``); an n-gram checkpoint ``NAME.json`` is the same dict in JSON. Both hold::

    {"format": "zoo-v1", "name": ..., "kind": "decoder" | "ngram",
     "config": {...},                 # the full DecoderConfig dict, or {"n": ..., "discount": ...}
     "tokenizer": {...},              # CharTokenizer.to_dict()
     "state_dict": {...} | "model": {...}}   # Decoder weights, or NGramModel.to_dict()
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lib.data import CharTokenizer, tokenizer_from_dict
from lib.models.decoder import Decoder, DecoderConfig
from lib.models.seq2seq import Seq2Seq, Seq2SeqConfig
from lib.models.ssd_lm import SSDLM, SSDLMConfig
from lib.ngram import NGramModel
from lib.zoo.registry import WEIGHTS_DIR, ZooEntry, get_entry, weights_path

__all__ = ["FORMAT", "expected_config", "load", "save"]

FORMAT = "zoo-v1"

Model = Decoder | NGramModel | SSDLM


def expected_config(entry: ZooEntry, vocab_size: int) -> dict[str, Any]:
    """The full configuration a checkpoint of ``entry`` must carry, for a tokenizer of ``vocab_size``."""
    if entry.kind == "decoder":
        return DecoderConfig(vocab_size=vocab_size, **entry.config).to_dict()
    if entry.kind == "ssd":
        return SSDLMConfig(vocab_size=vocab_size, **entry.config).to_dict()
    if entry.kind == "dmtd":  # a fine-tuned copy of its base decoder
        return expected_config(get_entry(entry.config["base"]), vocab_size)
    if entry.kind == "seq2seq":  # the characters, CTC's blank and eos
        return Seq2SeqConfig(vocab_size=vocab_size + 2, **entry.config).to_dict()
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
    if entry.kind in ("decoder", "ssd"):
        torch.save({**payload, "state_dict": model.state_dict()}, path)
    elif entry.kind in ("dmtd", "seq2seq"):  # fp16 halves the file; the build rounds the weights before scoring them
        torch.save({**payload, "state_dict": {k: v.half() for k, v in model.state_dict().items()}}, path)
    else:
        path.write_text(json.dumps({**payload, "model": model.to_dict()}))
    return path


def _read(path: Path, entry: ZooEntry, directory: Path) -> dict[str, Any]:
    """The checkpoint's dict, or an error that gives the command which writes the file."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no checkpoint for zoo entry {entry.name!r}; build it with: {entry.build_command(directory)}"
        )
    if entry.kind in ("decoder", "dmtd", "ssd", "seq2seq"):
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
    if entry.kind == "seq2seq":
        return Seq2Seq.from_state(payload["config"], payload["state_dict"]).eval(), tokenizer
    if entry.kind == "ssd":
        return SSDLM.from_state(payload["config"], payload["state_dict"]).eval(), tokenizer
    if entry.kind in ("decoder", "dmtd"):
        state = {k: v.float() for k, v in payload["state_dict"].items()}
        return Decoder.from_state(payload["config"], state).eval(), tokenizer
    model = NGramModel.from_dict(payload["model"])
    stored = (model.n, model.discount, model.vocab_size)
    if stored != (entry.config["n"], entry.config["discount"], tokenizer.vocab_size):
        raise ValueError(
            f"{path}: the counts are of a model with (n, discount, vocab_size) = {stored}, not what the config "
            f"says; rebuild it with: {entry.build_command(directory)}"
        )
    return model, tokenizer
