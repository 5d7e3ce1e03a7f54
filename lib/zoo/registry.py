"""What the zoo holds: each entry's recipe (typed here) and its measured figures (written by builds).

A recipe is a :class:`ZooEntry` without figures: the model's kind and configuration, the data, the
training budget. The figures — validation loss, bits per character, size, build time — are read
from ``registry.json`` next to the weights, which ``python -m lib.zoo build`` writes; nobody types
them. An entry not built yet has ``None`` figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "RECORDS_FILE",
    "SPECS",
    "WEIGHTS_DIR",
    "ZOO",
    "ZooEntry",
    "entries",
    "get_entry",
    "read_records",
    "weights_path",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Where the committed checkpoints and their ``registry.json`` live."""

RECORDS_FILE = "registry.json"


@dataclass(frozen=True)
class ZooEntry:
    """One checkpoint of the zoo: its recipe and, once built, its recorded figures.

    ``kind`` is ``"decoder"`` (``config`` holds :class:`lib.models.decoder.DecoderConfig` fields
    except ``vocab_size``, which the tokenizer sets) or ``"ngram"`` (``config`` holds ``n`` and
    ``discount`` of :class:`lib.ngram.NGramModel`). ``steps``, ``batch_size``, ``lr``,
    ``warmup_steps`` and ``weight_decay`` are the training recipe (``None`` for count models; the
    rest of :class:`lib.train.TrainConfig` keeps its defaults). ``val_loss_nats`` is the
    mean cross-entropy over the validation split, ``val_bpc`` the same in bits per character,
    ``params`` the trainable parameters (for an n-gram model: the stored n-gram counts).
    Kind ``"ssd"`` is :class:`lib.models.ssd_lm.SSDLM` (``config`` holds its
    :class:`~lib.models.ssd_lm.SSDLMConfig` fields except ``vocab_size``), trained like a decoder.
    Kind ``"dmtd"`` is a decoder fine-tuned for Direct Multi-Token Decoding (07.7): ``config``
    names its ``base`` entry, ``late_layers``, the cycle lengths ``taus`` it trains on (one drawn
    per batch) and ``eval_tau``, the cycle of its recorded validation loss.
    Kind ``"seq2seq"`` is :class:`lib.models.seq2seq.Seq2Seq`, an encoder–decoder with a CTC head
    trained on synthetic acoustics (07.5; ``config`` holds its config fields except ``vocab_size``);
    its validation loss is the decoder's cross-entropy per character on the held-out utterances.
    """

    name: str
    kind: str
    config: dict[str, Any]
    corpus: str
    tokenizer: str
    steps: int | None
    batch_size: int | None
    seq_len: int
    lr: float | None
    seed: int
    description: str
    warmup_steps: int | None = None
    weight_decay: float | None = None
    val_loss_nats: float | None = None
    val_bpc: float | None = None
    params: int | None = None
    build_seconds: float | None = None

    @property
    def built(self) -> bool:
        """Whether a build has recorded this entry's figures."""
        return self.val_loss_nats is not None

    def build_command(self, out: Path | None = None) -> str:
        """The exact shell command that (re)builds this entry (into ``out`` when it is not the default)."""
        command = f"python -m lib.zoo build {self.name}"
        if out is not None and Path(out).resolve() != WEIGHTS_DIR:
            command += f" --out {out}"
        return command


def _ngram_entry(name: str, n: int, description: str) -> ZooEntry:
    """The recipe of an n-gram count model on the pydoc text (no training steps, no learning rate)."""
    return ZooEntry(
        name=name, kind="ngram", config=dict(n=n, discount=0.75), corpus="pydoc", tokenizer="char",
        steps=None, batch_size=None, seq_len=256, lr=None, seed=0, description=description,
    )


def _decoder_entry(name: str, config: dict, description: str) -> ZooEntry:
    """The recipe of a char decoder on the pydoc text: 1,000 AdamW steps of 16 windows of 256 characters."""
    return ZooEntry(
        name=name, kind="decoder", config=config, corpus="pydoc", tokenizer="char", steps=1000, batch_size=16,
        seq_len=256, lr=3e-3, warmup_steps=100, weight_decay=0.1, seed=0, description=description,
    )


def _dmtd_entry(name: str, late_layers: int, description: str) -> ZooEntry:
    """char-target fine-tuned with the DMTD loss: 600 AdamW steps of 8 windows of 128, τ ∈ {2, 3, 4} per batch."""
    return ZooEntry(
        name=name, kind="dmtd", config=dict(base="char-target", late_layers=late_layers, taus=[2, 3, 4], eval_tau=4),
        corpus="pydoc", tokenizer="char", steps=600, batch_size=8, seq_len=128, lr=2e-3, warmup_steps=30,
        weight_decay=0.1, seed=0, description=description,
    )


def _ssd_entry(name: str, config: dict, description: str) -> ZooEntry:
    """A Mamba-2-style char LM (07.6): 700 AdamW steps of 16 windows of 128 characters, scored on windows of 128."""
    return ZooEntry(
        name=name, kind="ssd", config=config, corpus="pydoc", tokenizer="char", steps=700, batch_size=16,
        seq_len=128, lr=3e-3, warmup_steps=60, weight_decay=0.1, seed=0, description=description,
    )


_SSD = dict(d_model=128, n_layers=2, d_state=16, n_heads=4, expand=2, d_conv=4, mlp_ratio=2)
_TARGET = dict(d_model=128, n_layers=5, n_heads=4, max_seq_len=256)
_DRAFT = dict(d_model=64, n_layers=1, n_heads=4, max_seq_len=256)

def _asr_entry(name: str, config: dict, description: str) -> ZooEntry:
    """An encoder–decoder + CTC head on synthetic acoustics over pydoc lines (07.5): batches of 32 utterances."""
    return ZooEntry(
        name=name, kind="seq2seq", config=config, corpus="pydoc", tokenizer="char", steps=1200, batch_size=32,
        seq_len=60, lr=3e-3, warmup_steps=120, weight_decay=0.01, seed=0, description=description,
    )


_ASR = dict(n_features=16, d_model=96, n_heads=4, enc_layers=2, dec_layers=2, d_ff=192, max_frames=192, max_tokens=64)

SPECS: dict[str, ZooEntry] = {
    spec.name: spec
    for spec in [
        _decoder_entry("char-target", _TARGET,
                       "5-layer char decoder (d_model 128, RoPE): the big model of chapters 01 and 07"),
        _decoder_entry("char-draft", _DRAFT,
                       "1-layer char decoder (d_model 64), the target's training budget: a cheap draft model"),
        _ngram_entry("char-ngram", 5, "5-gram counts with interpolated absolute discounting: a draft with no network"),
        _ngram_entry("char-bigram", 2, "baseline: the previous character only"),
        _ngram_entry("char-unigram", 1, "baseline: character frequencies, no context"),
        _ssd_entry("char-ssd", _SSD, "2-layer Mamba-2-style char LM (d_model 128, N = 16, conv 4): the SSM of 07.6"),
        _dmtd_entry("char-target-dmtd1", 1, "char-target fine-tuned for DMTD, 1 late layer (07.7); val loss at τ = 4"),
        _dmtd_entry("char-target-dmtd2", 2, "char-target fine-tuned for DMTD, 2 late layers (07.7); val loss at τ = 4"),
        _asr_entry("asr-hybrid", _ASR, "2+2-layer encoder–decoder (d_model 96) + CTC head on synthetic acoustics (07.5)"),
    ]
}
"""The recipes, in the order ``python -m lib.zoo list`` shows them."""


def read_records(directory: Path) -> dict[str, dict[str, Any]]:
    """The figures builds wrote to ``directory/registry.json`` (empty when nothing was built there)."""
    path = Path(directory) / RECORDS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def entries(directory: Path = WEIGHTS_DIR) -> dict[str, ZooEntry]:
    """Every recipe, with the figures recorded in ``directory`` filled in where there are some."""
    records = read_records(directory)
    figures = ("val_loss_nats", "val_bpc", "params", "build_seconds")
    return {
        name: replace(spec, **{key: records[name][key] for key in figures}) if name in records else spec
        for name, spec in SPECS.items()
    }


ZOO: dict[str, ZooEntry] = entries()
"""The committed zoo: every recipe with the figures recorded in :data:`WEIGHTS_DIR`."""


def get_entry(name: str, directory: Path = WEIGHTS_DIR) -> ZooEntry:
    """The entry called ``name`` (figures from ``directory``), or an error listing the known names."""
    if name not in SPECS:
        raise ValueError(f"name: expected one of the zoo's entries {', '.join(SPECS)}, got {name!r}")
    return entries(directory)[name]


def weights_path(entry: ZooEntry, directory: Path = WEIGHTS_DIR) -> Path:
    """Where ``entry``'s checkpoint lives: ``NAME.pt`` for a decoder, ``NAME.json`` for counts."""
    return Path(directory) / f"{entry.name}.{'json' if entry.kind == 'ngram' else 'pt'}"
