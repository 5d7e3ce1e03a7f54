"""lib.models.ssd_lm: the three run modes agree, bad input is named, the zoo builds and loads char-ssd."""

import os
import subprocess
import sys

import pytest
import torch

from lib.bookmodel import ROOT
from lib.models.ssd_lm import SSDLM, SSDLMConfig
from lib.recurrent.ssd_tree import make_tree
from lib.zoo import ZOO, load, zoo_data
from lib.zoo.registry import read_records


@pytest.fixture(scope="module")
def model64() -> SSDLM:
    torch.manual_seed(0)
    return SSDLM(SSDLMConfig(vocab_size=20, d_model=32, n_layers=2, d_state=8, n_heads=2)).double().eval()


def test_chunks_steps_and_the_parallel_pass_agree(model64):
    ids = torch.randint(0, 20, (2, 23), generator=torch.Generator().manual_seed(1))
    full = model64(ids)
    cache = model64.new_cache(2)
    split = torch.cat([model64(ids[:, :9], cache), model64(ids[:, 9:], cache)], dim=1)
    assert cache.length == 23
    stepped = model64.new_cache(2)
    steps = torch.stack([model64.step(ids[:, t], stepped) for t in range(23)], dim=1)
    # float64; the three modes sum the same terms in different orders: rounding ~1e-15
    torch.testing.assert_close(split, full, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(steps, full, atol=1e-10, rtol=1e-10)


def test_tree_pass_and_commit_equal_the_chain(model64):
    ids = torch.randint(0, 20, (1, 16), generator=torch.Generator().manual_seed(2))
    full = model64(ids)
    cache = model64.new_cache(1)
    model64(ids[:, :6], cache)
    #   node 0 = ids[6]; path 0 → 2 → 4 carries ids[7], ids[8]; nodes 1, 3 are decoys
    parents = [-1, 0, 0, 1, 2]
    tokens = torch.tensor([ids[0, 6], (ids[0, 7] + 1) % 20, ids[0, 7], 3, ids[0, 8]])
    logits, tree_pass = model64.tree_forward(tokens, make_tree(parents), cache)
    torch.testing.assert_close(logits[[0, 2, 4]], full[0, 6:9], atol=1e-10, rtol=1e-10)  # float64 rounding
    model64.commit(cache, tree_pass, 4)
    assert cache.length == 9
    torch.testing.assert_close(model64(ids[:, 9:], cache), full[:, 9:], atol=1e-10, rtol=1e-10)


def test_bad_input_is_named(model64):
    cache = model64.new_cache(1)
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 20\), got \[0, 25\]"):
        model64(torch.tensor([[0, 25]]))
    with pytest.raises(TypeError, match="ids: expected one of int64, int32"):
        model64(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="tree: expected a Tree of 2 nodes"):
        model64.tree_forward(torch.tensor([1, 2]), make_tree([-1, 0, 0]), cache)
    _, tree_pass = model64.tree_forward(torch.tensor([1, 2]), make_tree([-1, 0]), cache)
    with pytest.raises(ValueError, match=r"leaf: expected a node index in \[0, 2\)"):
        model64.commit(cache, tree_pass, 2)
    with pytest.raises(ValueError, match="SSDLMConfig.n_heads: expected a divisor of d_inner = 64"):
        SSDLMConfig(vocab_size=5, d_model=32, n_heads=3)
    with pytest.raises(TypeError, match="config: expected an SSDLMConfig"):
        SSDLM({"vocab_size": 5})


def test_committed_char_ssd_beats_the_ngram_draft_and_decodes():
    assert ZOO["char-ssd"].val_bpc < ZOO["char-ngram"].val_bpc, "the SSM must beat its own draft"
    model, tok = load("char-ssd")
    assert not model.training and model.num_parameters() == ZOO["char-ssd"].params
    prompt = torch.as_tensor(zoo_data("pydoc").val_ids[:32])
    cache = model.new_cache(1)
    with torch.no_grad():
        logits = model(prompt[None], cache)
    assert torch.isfinite(logits).all() and cache.length == 32


def test_cli_smoke_build_of_char_ssd(tmp_path):
    command = [sys.executable, "-m", "lib.zoo", "build", "char-ssd", "--steps", "2", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "CI": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    record = read_records(tmp_path)["char-ssd"]
    assert record["steps"] == 2 and record["val_bpc"] > ZOO["char-ssd"].val_bpc  # 2 steps learn little
    model, _ = load("char-ssd", tmp_path)
    assert isinstance(model, SSDLM)
