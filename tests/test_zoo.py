"""lib.zoo: the committed checkpoints load, reach their recorded figures, and rebuild from the CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch

from lib.bookmodel import ROOT
from lib.train import bits_per_char
from lib.zoo import VAL_LOSS_ATOL, ZOO, WEIGHTS_DIR, CorpusChanged, evaluate_entry, get_entry, load
from lib.zoo.__main__ import table
from lib.zoo.registry import SPECS, read_records, weights_path

MAX_FILE_BYTES = 5 * 1024 * 1024
DRAFTS = ("char-draft", "char-ngram")
MARGIN_BITS = 0.2
""""Clearly better": the target must beat each draft by at least this many bits per character."""


@pytest.fixture(scope="module")
def recomputed() -> dict[str, float]:
    """Each committed entry's validation loss, recomputed from its committed file (nats/char)."""
    losses = {}
    for name in ZOO:
        try:
            losses[name] = evaluate_entry(name)[1]
        except CorpusChanged as err:
            pytest.skip(f"the recorded figures describe another corpus: {err}")
    return losses


@pytest.mark.parametrize("name", list(ZOO))
def test_every_entry_is_built_with_its_recipe_into_a_small_file(name):
    entry, record = ZOO[name], read_records(WEIGHTS_DIR)[name]
    assert entry.built, f"{name} has no recorded figures: {entry.build_command()}"
    assert record["steps"] == entry.steps, "the committed build must follow the recipe"
    path = weights_path(entry)
    assert path.stat().st_size == record["file_bytes"] <= MAX_FILE_BYTES


@pytest.mark.parametrize("name", list(ZOO))
def test_committed_checkpoint_reaches_its_recorded_validation_loss(name, recomputed):
    # Bit-identical on the build machine; VAL_LOSS_ATOL covers float32 summation order elsewhere.
    assert recomputed[name] == pytest.approx(ZOO[name].val_loss_nats, abs=VAL_LOSS_ATOL)


@pytest.mark.parametrize("source", ["recorded", "recomputed"])
def test_target_is_clearly_better_than_the_drafts_and_baselines(source, request):
    if source == "recorded":
        bits = {name: entry.val_bpc for name, entry in ZOO.items()}
    else:
        bits = {name: bits_per_char(nats) for name, nats in request.getfixturevalue("recomputed").items()}
    for draft in DRAFTS:
        assert bits["char-target"] < bits[draft] - MARGIN_BITS, (source, bits)
        assert bits[draft] < bits["char-bigram"] < bits["char-unigram"], (source, bits)


def test_load_gives_an_eval_mode_decoder_and_its_tokenizer():
    model, tok = load("char-target")
    assert not model.training
    assert model.config.vocab_size == tok.vocab_size
    assert model.num_parameters() == ZOO["char-target"].params
    prompt = torch.as_tensor(tok.encode("The "))
    text = tok.decode(model.generate(prompt, 20, seed=0))
    assert text.startswith("The ") and len(text) == 24


def test_load_gives_an_ngram_model_that_samples():
    model, tok = load("char-ngram")
    assert model.n == ZOO["char-ngram"].config["n"]
    assert len(tok.decode(model.sample(10, prompt=tok.encode("the "), seed=0))) == 14


def test_unknown_name_lists_the_known_ones():
    known = ", ".join(SPECS)  # every recipe, in registry order (sections add entries)
    with pytest.raises(ValueError, match=f"name: expected one of the zoo's entries {known}, got 'char-huge'"):
        load("char-huge")


def test_missing_file_names_the_command_that_builds_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"build it with: python -m lib.zoo build char-draft --out {tmp_path}"):
        load("char-draft", tmp_path)


def test_a_checkpoint_whose_config_differs_from_the_recipe_is_refused(tmp_path):
    payload = torch.load(weights_path(ZOO["char-draft"]), weights_only=True)
    payload["config"]["n_layers"] = 2
    torch.save(payload, tmp_path / "char-draft.pt")
    expected = "config n_layers=2 in the file, but zoo entry 'char-draft' expects n_layers=1"
    with pytest.raises(ValueError, match=expected):
        load("char-draft", tmp_path)


def test_an_ngram_file_of_another_order_is_refused(tmp_path):
    payload = json.loads(weights_path(ZOO["char-ngram"]).read_text())
    payload["config"]["n"] = 3
    (tmp_path / "char-ngram.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="config n=3 in the file"):
        load("char-ngram", tmp_path)


def test_cli_smoke_rebuild_of_every_entry(tmp_path):
    names = ["char-target", "char-draft", "char-ngram"]
    command = [sys.executable, "-m", "lib.zoo", "build", *names, "--steps", "3", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "CI": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    records = read_records(tmp_path)
    assert sorted(records) == sorted(names)
    assert records["char-target"]["steps"] == records["char-draft"]["steps"] == 3
    for name in names:
        recorded, measured = evaluate_entry(name, tmp_path)  # a fresh process, the same figure
        assert measured == pytest.approx(recorded, abs=VAL_LOSS_ATOL)
    assert get_entry("char-target", tmp_path).val_bpc > ZOO["char-target"].val_bpc, "3 steps learn little"


def test_cli_rejects_an_unknown_name():
    done = subprocess.run(
        [sys.executable, "-m", "lib.zoo", "eval", "char-huge"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "unknown zoo entry 'char-huge'; known: char-target, char-draft" in done.stderr


def test_docs_zoo_md_holds_the_current_table():
    assert table(markdown=True) in (ROOT / "docs" / "ZOO.md").read_text(), (
        "docs/ZOO.md is stale: paste the output of `python -m lib.zoo list --markdown`"
    )
