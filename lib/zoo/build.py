"""Building a zoo entry: the data, the seeded training (or counting), the validation figures.

``build(name)`` is what ``python -m lib.zoo build NAME`` runs. It writes the checkpoint and adds
the entry's figures to ``registry.json`` in the output folder, so every number in the zoo's table
comes from a build, never from a hand.

The validation loss is the mean next-character cross-entropy over the validation split (the last
10 % of the corpus). A decoder scores it in non-overlapping windows of ``seq_len`` characters
(:func:`lib.train.evaluate_lm`; each window restarts the context); an n-gram model scores every
character after the first with its full ``n − 1``-character context. Both count what a model
pays, on average, to encode one unseen character.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.data import CharTokenizer, load_corpus, random_batches, train_val_split
from lib.data.acoustics import acoustic_split
from lib.decoding.dmtd import DMTDView, finetune_dmtd
from lib.models.decoder import Decoder, DecoderConfig
from lib.models.seq2seq import Seq2Seq, Seq2SeqConfig, asr_validation_loss, train_asr
from lib.models.ssd_lm import SSDLM, SSDLMConfig
from lib.ngram import NGramModel
from lib.seeding import seed_everything
from lib.train import History, TrainConfig, bits_per_char, evaluate_lm, train
from lib.zoo.checkpoints import Model, load, save
from lib.zoo.registry import RECORDS_FILE, WEIGHTS_DIR, ZooEntry, get_entry, read_records

__all__ = [
    "EVAL_BATCH_SIZE",
    "VAL_LOSS_ATOL",
    "CorpusChanged",
    "ZooData",
    "build",
    "evaluate_entry",
    "validation_loss",
    "zoo_data",
]

EVAL_BATCH_SIZE = 32
"""Windows per batch when a decoder is scored on the validation split."""

EVALUATIONS = 10
"""How many times a decoder is scored on the validation split while it trains (its learning curve);
a run shorter than this many steps is scored once, at the end."""

VAL_LOSS_ATOL = 1e-4
"""How far (nats per character) a recomputed validation loss may sit from the recorded one.

On the machine and thread count of the build the figure comes back bit for bit. Elsewhere, float32
sums run in another order (SIMD width, thread split), which moves a mean of ~10⁵ per-token losses
by ~10⁻⁶; a changed weight or a changed evaluation moves it by far more than 10⁻⁴."""


class CorpusChanged(RuntimeError):
    """The corpus text differs from the one an entry was built on (another Python version)."""


@dataclass(frozen=True)
class ZooData:
    """A corpus split and tokenized the zoo's way; ``corpus_sha256`` fingerprints the text."""

    tokenizer: CharTokenizer
    train_ids: np.ndarray
    val_ids: np.ndarray
    corpus_sha256: str


def zoo_data(corpus: str) -> ZooData:
    """Load ``corpus``, keep the last 10 % for validation, tokenize by character.

    The vocabulary is every character of the whole corpus, so the validation text never holds an
    unknown character; no statistic of the validation text enters training.
    """
    text = load_corpus(corpus)
    train_text, val_text = train_val_split(text, val_fraction=0.1)
    tokenizer = CharTokenizer.from_text(text)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return ZooData(tokenizer, tokenizer.encode(train_text), tokenizer.encode(val_text), sha)


def validation_loss(entry: ZooEntry, model: Model, val_ids: np.ndarray) -> float:
    """Mean cross-entropy of ``model`` on ``val_ids``, in nats per character (see the module docstring)."""
    if entry.kind in ("decoder", "ssd"):
        return evaluate_lm(model, val_ids, EVAL_BATCH_SIZE, entry.seq_len)
    if entry.kind == "dmtd":  # scored under DMTD's information flow with cycles of eval_tau
        view = DMTDView(model, entry.config["late_layers"], entry.config["taus"], entry.config["eval_tau"])
        return evaluate_lm(view, val_ids, EVAL_BATCH_SIZE, entry.seq_len)
    if entry.kind == "seq2seq":  # the decoder on the held-out synthetic utterances (07.5)
        return asr_validation_loss(model, val_ids, zoo_data(entry.corpus).tokenizer)
    return model.cross_entropy(val_ids)


def _train_decoder(entry: ZooEntry, data: ZooData, steps: int, progress: bool | None) -> tuple[Decoder, History]:
    """Seed, build the decoder, train it on random windows of the training split."""
    seed_everything(entry.seed)
    vocab_size = data.tokenizer.vocab_size
    if entry.kind == "ssd":  # a Mamba-2-style state-space LM (07.6), trained by the same loop
        model = SSDLM(SSDLMConfig(vocab_size=vocab_size, **entry.config))
    else:
        model = Decoder(DecoderConfig(vocab_size=vocab_size, **entry.config))
    batches = random_batches(data.train_ids, entry.batch_size, entry.seq_len, seed=entry.seed)
    config = TrainConfig(
        steps=steps,
        lr=entry.lr,
        warmup_steps=entry.warmup_steps,
        weight_decay=entry.weight_decay,
        eval_every=steps // EVALUATIONS,
        seed=entry.seed,
        progress=progress,
    )
    history = train(model, batches, config, evaluate=lambda m: validation_loss(entry, m, data.val_ids))
    return model, history


def _finetune_dmtd(entry: ZooEntry, data: ZooData, steps: int, progress: bool | None) -> tuple[Decoder, History]:
    """Seed, load the committed base decoder, fine-tune it with the DMTD loss (07.7), round it to fp16."""
    seed_everything(entry.seed)
    model, _ = load(entry.config["base"])
    batches = random_batches(data.train_ids, entry.batch_size, entry.seq_len, seed=entry.seed)
    config = TrainConfig(
        steps=steps, lr=entry.lr, warmup_steps=entry.warmup_steps, weight_decay=entry.weight_decay,
        seed=entry.seed, progress=progress,
    )  # no learning curve: a short run, scored once by build()
    history = finetune_dmtd(model, batches, entry.config["late_layers"], entry.config["taus"], config)
    for p in model.parameters():  # the checkpoint stores fp16: score the weights it will hold
        p.data = p.data.half().float()
    return model, history


def _train_seq2seq(entry: ZooEntry, data: ZooData, steps: int, progress: bool | None) -> tuple[Seq2Seq, History]:
    """Seed, synthesize the training utterances, train the encoder–decoder and then its CTC head (07.5)."""
    seed_everything(entry.seed)
    config = Seq2SeqConfig(vocab_size=data.tokenizer.vocab_size + 2, **entry.config)
    split = acoustic_split(data.train_ids, data.tokenizer, "train", seed=entry.seed)
    return train_asr(config, split, steps=steps, batch_size=entry.batch_size, lr=entry.lr,
                     warmup_steps=entry.warmup_steps, weight_decay=entry.weight_decay, seed=entry.seed)


TRAINERS = {"decoder": _train_decoder, "ssd": _train_decoder, "dmtd": _finetune_dmtd, "seq2seq": _train_seq2seq}
"""How each kind of network is trained: ``(entry, data, steps, progress) -> (model, History)``."""


def _training_record(history: History) -> dict[str, Any]:
    return {
        "final_train_loss": history.train_loss[-1],
        "tokens_per_s": round(history.tokens_per_s),
        "curve": [[step, round(value, 5)] for step, value in history.eval],
    }


def _write_record(directory: Path, name: str, record: dict[str, Any]) -> None:
    """Add ``record`` under ``name`` to ``directory/registry.json``, keeping the other entries."""
    records = read_records(directory)
    records[name] = record
    (directory / RECORDS_FILE).write_text(json.dumps(dict(sorted(records.items())), indent=1) + "\n")


def build(
    name: str, *, steps: int | None = None, out: Path | str = WEIGHTS_DIR, progress: bool | None = None
) -> dict[str, Any]:
    """Train (or count) entry ``name``, write its checkpoint into ``out`` and record its figures.

    ``steps`` overrides the recipe's training steps (a smoke test runs 3). Returns the record
    written to ``out/registry.json``.
    """
    entry = get_entry(name)
    if steps is not None and entry.kind == "ngram":
        steps = None  # counting has no steps
    out = Path(out)
    start = time.perf_counter()
    data = zoo_data(entry.corpus)
    record: dict[str, Any] = {"steps": steps or entry.steps}
    if entry.kind in TRAINERS:
        model, history = TRAINERS[entry.kind](entry, data, steps or entry.steps, progress)
        params = model.num_parameters()
        record.update(_training_record(history))
    else:
        n, discount = entry.config["n"], entry.config["discount"]
        model = NGramModel.fit(data.train_ids, data.tokenizer.vocab_size, n, discount=discount)
        params = model.num_counts
    val_loss = validation_loss(entry, model, data.val_ids)
    path = save(entry, model, data.tokenizer, out)
    record.update(
        val_loss_nats=val_loss,
        val_bpc=bits_per_char(val_loss),
        params=params,
        build_seconds=round(time.perf_counter() - start, 1),
        file_bytes=path.stat().st_size,
        corpus_sha256=data.corpus_sha256,
        python=platform.python_version(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    _write_record(out, name, record)
    return record


def evaluate_entry(name: str, directory: Path | str = WEIGHTS_DIR) -> tuple[float, float]:
    """``(recorded, recomputed)`` validation loss of built entry ``name`` in ``directory``, in nats.

    Raises :class:`CorpusChanged` when this Python's corpus is not the text the entry was built on:
    the recorded figure then describes other data.
    """
    directory = Path(directory)
    entry = get_entry(name, directory)
    record = read_records(directory).get(name)
    if record is None:
        raise FileNotFoundError(
            f"{directory / RECORDS_FILE}: no figures for {name!r}; build it with: {entry.build_command(directory)}"
        )
    model, tokenizer = load(name, directory)
    data = zoo_data(entry.corpus)
    if data.corpus_sha256 != record["corpus_sha256"]:
        raise CorpusChanged(
            f"corpus {entry.corpus!r}: this Python ({platform.python_version()}) gives other text than the "
            f"build's (Python {record['python']}); rebuild with: {entry.build_command(directory)}"
        )
    return record["val_loss_nats"], validation_loss(entry, model, data.val_ids)
