"""The book's data: real text that ships with Python, two tokenizers, batches, and synthetic tasks.

Nothing is downloaded: the corpora are read from the running interpreter, the tasks are generated
from a seed.

How a section uses it. A language-modelling section loads a corpus, splits it, builds a
tokenizer on the training text, and draws batches::

    from lib.data import load_corpus, train_val_split, CharTokenizer, random_batches, eval_batches

    train_text, val_text = train_val_split(load_corpus("pydoc"))       # last 10% is validation
    tok = CharTokenizer.from_text(train_text + val_text)                # or ByteTokenizer()
    train_ids, val_ids = tok.encode(train_text), tok.encode(val_text)   # int64 arrays
    for step, (x, y) in zip(range(200), random_batches(train_ids, 32, 128, seed=0)):
        ...                                                             # x, y: (32, 128) long, y = x shifted by one
    for x, y in eval_batches(val_ids, 64, 128):                        # each window once, in order
        ...                                                             # sum the validation loss

and saves ``tok.to_dict()`` in its checkpoint (``tokenizer_from_dict`` reads it back). A section on
an algorithmic skill draws a task instead and trains on the answer tokens only::

    batch = make_task("flip_flop", 4096, seed=0, length=256)
    batch.inputs, batch.targets          # (n, L-1) long; targets are -100 outside the answers
    batch.answer_mask, batch.text(0)     # where the loss is taken; example 0 rendered as a string

The corpora vary with the Python version (its documentation and standard library change), so a
section records ``sys.version`` next to numbers measured on them. Modules: :mod:`lib.data.corpora`,
:mod:`lib.data.tokenizers`, :mod:`lib.data.batches`, :mod:`lib.data.tasks`.
"""

from lib.data.batches import eval_batches, random_batches
from lib.data.corpora import CORPORA, load_corpus, train_val_split
from lib.data.tasks import TASKS, TaskBatch, TaskSpec, make_task
from lib.data.tokenizers import ByteTokenizer, CharTokenizer, tokenizer_from_dict

__all__ = [
    "CORPORA",
    "TASKS",
    "ByteTokenizer",
    "CharTokenizer",
    "TaskBatch",
    "TaskSpec",
    "eval_batches",
    "load_corpus",
    "make_task",
    "random_batches",
    "tokenizer_from_dict",
    "train_val_split",
]
