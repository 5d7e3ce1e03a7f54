"""The checkpoint zoo: small trained models the chapters load instead of training them.

A notebook has 60 seconds (CONVENTIONS §8); a language model worth studying takes minutes to
train. So the book trains a few models once, commits their weights (each file ≤ 5 MB), and every
section loads them::

    from lib.zoo import load, ZOO
    model, tok = load("char-target")                 # a Decoder in eval mode + its CharTokenizer
    ZOO["char-target"].val_bpc                       # the recorded validation bits per character

The entries, all on the ``"pydoc"`` corpus with one token per character (:data:`ZOO`,
``python -m lib.zoo list``):

* ``char-target`` — a 5-layer decoder, d_model 128, ~1M parameters: the model chapters 01 and 07
  study and accelerate;
* ``char-draft`` — a 1-layer decoder, d_model 64, trained on the same 1000 batches: 18× fewer
  parameters, clearly worse, a draft model;
* ``char-ngram`` — a 5-gram count model (:mod:`lib.ngram`): a draft with no network at all;
* ``char-bigram``, ``char-unigram`` — the baselines every model must beat.

Rebuild commands (seeded; each overwrites ``lib/zoo/weights/NAME.*`` and its figures in
``lib/zoo/weights/registry.json``; timings on the book's 2-core CPU are in ``docs/ZOO.md``)::

    python -m lib.zoo build char-target        # ~4 minutes
    python -m lib.zoo build char-draft         # ~1–2 minutes
    python -m lib.zoo build char-ngram char-bigram char-unigram   # seconds
    python -m lib.zoo build char-target --steps 3 --out /tmp/zoo   # a smoke run elsewhere
    python -m lib.zoo list [--markdown]        # the table (docs/ZOO.md pastes the Markdown)
    python -m lib.zoo eval char-target         # recompute the validation loss, compare with the record

Builds are deterministic on the same machine and thread count: the same command gives the same
weights and the same figures. The corpus comes from the running Python's documentation, so a
different Python version gives different text: :func:`evaluate_entry` notices (the corpus hash is
recorded) and asks for a rebuild.
"""

from lib.zoo.build import VAL_LOSS_ATOL, CorpusChanged, build, evaluate_entry, validation_loss, zoo_data
from lib.zoo.checkpoints import load
from lib.zoo.registry import WEIGHTS_DIR, ZOO, ZooEntry, get_entry

__all__ = [
    "VAL_LOSS_ATOL",
    "WEIGHTS_DIR",
    "ZOO",
    "CorpusChanged",
    "ZooEntry",
    "build",
    "evaluate_entry",
    "get_entry",
    "load",
    "validation_loss",
    "zoo_data",
]
