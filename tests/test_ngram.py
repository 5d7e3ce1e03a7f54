"""lib.ngram: probabilities sum to one, agree with a direct reading of the formula, round-trip."""

import json
import math
from collections import Counter

import numpy as np
import pytest

from lib.ngram import NGramModel

TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on a mat; "
    "the mat was flat, the log was not. cats nap, dogs dig, and the cat sat again."
)
CHARS = sorted(set(TEXT)) + ["#"]  # '#' never occurs: an unseen token must still get mass
IDS = np.array([CHARS.index(c) for c in TEXT])
V = len(CHARS)


def reference_probability(ids: np.ndarray, n: int, discount: float, context: list[int], w: int) -> float:
    """Interpolated absolute discounting read straight off the formula, with dicts and recursion.

    Counts of order k are the k-token suffixes of every n-token window, as the model defines them.
    """
    windows = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    grams = Counter(window[n - k :] for window in windows for k in range(1, n + 1))

    def p(k: int) -> float:
        if k == 0:
            return 1.0 / V
        history = tuple(context[len(context) - (k - 1) :]) if k > 1 else ()
        if len(history) < k - 1:
            return p(k - 1)
        followers = {g[-1]: c for g, c in grams.items() if len(g) == k and g[:-1] == history}
        total = sum(followers.values())
        if total == 0:
            return p(k - 1)
        return (max(followers.get(w, 0) - discount, 0) + discount * len(followers) * p(k - 1)) / total

    return p(n)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("context", ["", "t", "the ", " sat on", "#a#", "###"])
def test_next_distribution_sums_to_one_and_is_positive(n, context):
    model = NGramModel.fit(IDS, V, n)
    p = model.next_distribution([CHARS.index(c) for c in context])
    assert p.shape == (V,)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert (p > 0).all(), "smoothing leaves no token at probability zero"


@pytest.mark.parametrize("n, discount", [(1, 0.75), (2, 0.5), (3, 0.75), (4, 1.0)])
def test_probabilities_match_the_formula(n, discount):
    model = NGramModel.fit(IDS, V, n, discount=discount)
    for context in ["", "a", "the c", "on th", "#a", "t#"]:
        ctx = [CHARS.index(c) for c in context]
        ours = model.next_distribution(ctx)
        reference = [reference_probability(IDS, n, discount, ctx, w) for w in range(V)]
        np.testing.assert_allclose(ours, reference, rtol=1e-12, err_msg=f"context {context!r}")


def test_unigram_baseline_in_closed_form():
    model = NGramModel.fit(IDS, V, 1, discount=0.75)
    counts = np.bincount(IDS, minlength=V)
    seen = (counts > 0).sum()
    expected = (np.maximum(counts - 0.75, 0) + 0.75 * seen / V) / len(IDS)
    np.testing.assert_allclose(model.next_distribution([]), expected, rtol=1e-12)


def test_bigram_follows_the_previous_character():
    model = NGramModel.fit(IDS, V, 2)
    after_space = model.next_distribution([CHARS.index(" ")])
    assert CHARS[int(after_space.argmax())] in "tcsdamlo"  # a word starts after a space
    unigram = NGramModel.fit(IDS, V, 1).next_distribution([])
    space = CHARS.index(" ")
    assert after_space[space] < unigram[space] / 3, "TEXT has no double spaces: only back-off mass is left"


def test_cross_entropy_is_the_mean_negative_log_prob():
    model = NGramModel.fit(IDS, V, 3)
    text = IDS[:40]
    direct = -np.mean([model.log_prob(int(text[i]), text[max(0, i - 2) : i]) for i in range(1, len(text))])
    assert model.cross_entropy(text) == pytest.approx(direct, rel=1e-12)


def test_longer_contexts_fit_the_training_text_better():
    losses = [NGramModel.fit(IDS, V, n).cross_entropy(IDS) for n in range(1, 6)]
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    assert losses[0] < math.log(V), "the unigram beats the uniform distribution"


def test_round_trip_through_json_gives_the_same_model():
    model = NGramModel.fit(IDS, V, 4, discount=0.6)
    copy = NGramModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert (copy.n, copy.vocab_size, copy.discount, copy.num_counts) == (4, V, 0.6, model.num_counts)
    np.testing.assert_array_equal(copy.next_distribution(IDS[:7]), model.next_distribution(IDS[:7]))
    assert copy.cross_entropy(IDS) == model.cross_entropy(IDS)


def test_sampling_is_seeded():
    model = NGramModel.fit(IDS, V, 3)
    prompt = [CHARS.index(c) for c in "the "]
    first = model.sample(30, prompt=prompt, seed=1)
    assert len(first) == 34 and list(first[:4]) == prompt
    np.testing.assert_array_equal(first, model.sample(30, prompt=prompt, seed=1))
    assert not np.array_equal(first, model.sample(30, prompt=prompt, seed=2))


def test_low_temperature_sampling_is_greedy():
    model = NGramModel.fit(IDS, V, 3)
    tokens = model.sample(5, prompt=[CHARS.index(c) for c in "the c"], temperature=1e-3, seed=0)
    greedy = [CHARS.index(c) for c in "the c"]
    for _ in range(5):
        greedy.append(int(model.next_distribution(greedy).argmax()))
    assert list(tokens) == greedy


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: NGramModel.fit(IDS, V, 0), "n: expected a positive int, got 0"),
        (lambda: NGramModel.fit(IDS, 5, 2), r"ids: expected ids in \[0, 5\)"),
        (lambda: NGramModel.fit(IDS.astype(float), V, 2), "ids: expected a 1-d sequence of integer token ids"),
        (lambda: NGramModel.fit(IDS[:2], V, 3), "ids: expected at least n = 3 tokens to count, got 2"),
        (lambda: NGramModel.fit(IDS, V, 2, discount=0), r"discount: expected a number in \(0, 1\], got 0"),
        (lambda: NGramModel.fit(IDS, V, 2).log_prob(V, []), rf"next_id: expected an int in \[0, {V}\)"),
        (lambda: NGramModel.fit(IDS, V, 2).cross_entropy(IDS[:1]), "ids: expected at least 2 tokens"),
        (lambda: NGramModel.fit(IDS, V, 2).sample(3, temperature=0), "temperature: expected a positive number"),
        (lambda: NGramModel.from_dict({"format": "other"}), "d: expected a dict with format 'ngram-counts-v1'"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
