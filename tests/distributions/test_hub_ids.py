"""Models by Hugging Face Hub id (ORG/NAME) resolve as transformers resolves them: from the local cache, laid out
on disk here; never from the network while HF_HUB_OFFLINE is set."""

import pytest
import yaml

import bayeslm as bl
from bayeslm.distributions.loading import ModelNotFound, hub_id, load_lm
from bayeslm.modelling.target_file import load_target

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding one model, toy/prior, as `hf download` lays it out."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--toy--prior" / "snapshots" / COMMIT
    model = bl.load_lm({"toy": {"seed": 0, "train_steps": 20}})
    model.model.save_pretrained(snapshot)
    model.tokenizer.save_pretrained(snapshot)
    (cache / "models--toy--prior" / "refs").mkdir()
    (cache / "models--toy--prior" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return model


def test_a_hub_id_loads_from_the_cache(hub_cache, tmp_path):
    lm = load_lm("toy/prior")
    assert lm.name == "toy/prior" and lm.source == "toy/prior"
    continuations = [[3, 4], [5]]
    assert lm.log_prob(["", "the"], continuations).tolist() == pytest.approx(
        hub_cache.log_prob(["", "the"], continuations).tolist(), abs=1e-6)
    # in a target file too, where relative paths resolve against the file's directory
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"prior": "toy/prior", "prompts": [""], "max_new_tokens": 2,
                                                     "potentials": [{"forbid": {"strings": ["bad"]}}]}))
    assert load_target(tmp_path / "t.yaml").prior.name == "toy/prior"


def test_a_hub_id_not_in_the_cache_is_not_downloaded_offline(hub_cache):
    with pytest.raises(ModelNotFound, match="not in the Hugging Face cache .* HF_HUB_OFFLINE forbids downloading"):
        load_lm("toy/missing")


def test_what_reads_as_a_hub_id():
    assert hub_id("HuggingFaceTB/SmolLM2-135M-Instruct") and hub_id("org/name.v2")
    assert not any(map(hub_id, ["./org/name", "/abs/path", "a/b/c", "../x", "name", "org/"]))
