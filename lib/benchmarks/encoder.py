"""Benchmark of the book's pretrained encoder (all-MiniLM-L6-v2 on :mod:`lib.models.bert`).

One forward pass over a fixed, padded batch of 32 real sentences (the first paragraph of each of
the first 32 help topics in ``pydoc_data.topics``, Python's own documentation), the same token ids
for every provider; tokenizing is not timed.

* ``transformers BertModel`` — Hugging Face's implementation with its default attention (SDPA):
  the reference, which is also the best existing implementation (so the table has one ratio
  column). Needs ``transformers`` (a dev dependency).
* ``book BertEncoder`` — the book's encoder, fast route (fused QKV projection + SDPA).
* ``book, with attention maps`` — the explicit softmax route that returns every (B, H, T, T) map,
  what a plot costs.

The issue's target: the book's encoder within 1.5× of the reference's time.
"""

from __future__ import annotations

import os
from functools import partial

import pydoc_data.topics
import torch

from lib.bench import BenchTable, compare, register
from lib.models.minilm import load_minilm, minilm_dir

__all__ = ["benchmark_sentences", "minilm_benchmark", "minilm_table"]

BATCH = 32
TARGET_RATIO = 1.5  # the book's time / the reference's time the issue accepts


def benchmark_sentences(n: int = BATCH) -> list[str]:
    """The first paragraph of each of the first ``n`` topics of Python's help (sorted), on one line.

    A topic reads "Title / ***** / first paragraph / ...": the paragraph after the title is prose of
    one or two sentences, from a few words to a few dozen, so the batch is padded.
    """
    texts = [pydoc_data.topics.topics[name] for name in sorted(pydoc_data.topics.topics)[:n]]
    return [" ".join(text.split("\n\n")[1].split()) for text in texts]


def _transformers_bert() -> torch.nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local: never ask the hub
    try:
        from transformers import BertModel
        from transformers.utils.logging import disable_progress_bar
    except ImportError:
        raise ImportError(
            "the minilm benchmark compares with transformers' BertModel: pip install transformers"
        ) from None
    disable_progress_bar()  # no "Loading weights" bar between the tables
    return BertModel.from_pretrained(minilm_dir(), local_files_only=True).eval()


def _run(model: torch.nn.Module, **inputs: torch.Tensor | bool) -> None:
    with torch.inference_mode():
        model(**inputs)


def minilm_table() -> BenchTable:
    """Time one forward pass of each provider on the padded batch; print the book/reference ratio."""
    minilm = load_minilm()
    batch = minilm.tokenize(benchmark_sentences())
    ids, mask = batch.input_ids, batch.attention_mask
    providers = {
        "transformers BertModel": partial(_run, _transformers_bert(), input_ids=ids, attention_mask=mask),
        "book BertEncoder": partial(_run, minilm.encoder, input_ids=ids, attention_mask=mask),
        "book, with attention maps": partial(
            _run, minilm.encoder, input_ids=ids, attention_mask=mask, output_attentions=True
        ),
    }
    table = compare(
        "minilm forward", providers,
        shape=f"{ids.shape[0]}×{ids.shape[1]} tokens ({int(mask.sum())} real)", dtype="float32",
        reference="transformers BertModel", device="cpu", min_run_time=3.0,
    )
    ratio = 1 / table.speedup("book BertEncoder", over="transformers BertModel")
    verdict = "within" if ratio <= TARGET_RATIO else "OUTSIDE"
    print(
        f"book BertEncoder takes {ratio:.2f}× the time of transformers' BertModel "
        f"({verdict} the {TARGET_RATIO}× target)"
    )
    return table


@register("minilm")
def minilm_benchmark(device: str) -> list[BenchTable]:
    """``make bench``: the CPU forward pass of all-MiniLM-L6-v2 (the encoder is a CPU workbench model)."""
    if device != "cpu":
        return []
    return [minilm_table()]
