"""The README's quick start, as written, on a toy prior instead of SmolLM2 (and with fewer steps)."""

import pytest

import bayeslm as bl


def test_quick_start_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 200}})
    target = (prior * bl.Exponential(bl.rewards.sentiment(), beta=0.1)).given(["the movie"], max_new_tokens=4)
    run = bl.train(target, bl.KLRL(), steps=6, samples_per_prompt=16, lr=1e-3, lora=bl.LoRA(r=8), out="runs/klrl",
                   quiet=True, eval_n=16)
    ref = bl.reference(target)
    before = bl.scorecard(prior, target, n=256, reference=ref)
    card = bl.scorecard(run.model, target, n=256, reference=ref)
    draws = bl.sample(target, "smc", n=64)

    assert run.directory.name == "klrl" and (tmp_path / "runs/klrl/model/config.json").is_file()
    assert before["log_z"].value == card["log_z"].value and before["kl_model_prior"].value == 0
    assert draws.method == "smc" and len(draws) == 64
    text = str(card)
    for label in ("log Z", "ELBO", "EUBO", "KL(q‖π*)", "KL(π*‖q)", "entropy"):
        assert label in text
    assert card["kl_model_target"].stderr > 0


def test_the_public_api_is_flat_and_listed():
    assert {"load_lm", "Target", "Exponential", "Constraint", "KLRL", "DPG", "FDPG", "RL", "LoRA", "train",
            "sample", "scorecard", "rewards", "samplers", "Objective", "Sampler"} <= set(bl.__all__)
    for name in bl.__all__:
        assert getattr(bl, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bl.nope


def test_options_built_in_python_are_checked_like_yaml():
    with pytest.raises(ValueError, match="KLRL.kl: expected one of 'analytic', 'k1', 'k3', got 'exact'"):
        bl.KLRL(kl="exact")
    with pytest.raises(ValueError, match="unknown key"):
        bl.sample(None, "smc", n=4, particles=3)
