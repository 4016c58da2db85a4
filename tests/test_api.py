"""The README's quick start, as written, on a toy prior instead of SmolLM2 (and with fewer steps)."""

import json

import pytest
import torch

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


def test_a_trainer_stepped_by_hand_is_the_run_train_makes(tmp_path):
    """`bl.train` is a loop over `bl.Trainer`: stepping one by hand gives the same figures and the same weights."""
    def target():  # a prior of its own for each run: LoRA adapts the prior's modules in place
        prior = bl.load_lm({"toy": {"seed": 0, "train_steps": 200}})
        return (prior * bl.Exponential(bl.rewards.keyword(["good"]), beta=0.5)).given(["", "the movie"],
                                                                                      max_new_tokens=3)

    settings = {"steps": 3, "samples_per_prompt": 8, "lr": 1e-2, "eval_n": 16, "quiet": True}
    run = bl.train(target(), bl.DPG(proposal="adaptive"), lora=bl.LoRA(r=2), **settings)
    trainer = bl.Trainer(target(), bl.DPG(proposal="adaptive"), lora=bl.LoRA(r=2), **settings)
    records = [trainer.step() for _ in range(3)]
    by_hand = trainer.finish()
    timing = {"samples_per_s", "tokens_per_s", "sample_seconds", "step_seconds"}

    def figures(rows):  # as text: NaN equals NaN
        return json.dumps([{k: v for k, v in r.items() if k not in timing} for r in rows], sort_keys=True)

    assert figures(records) == figures(run.metrics) and [r["proposal_swap"] for r in records]
    assert isinstance(by_hand, bl.Run) and by_hand.objective is trainer.objective
    assert by_hand.scorecard["elbo"].value == run.scorecard["elbo"].value
    for a, b in zip(run.model.model.parameters(), by_hand.model.model.parameters()):
        assert torch.equal(a, b)
    assert trainer.objective.sampling.copy is None  # the adaptive proposal's copy of the model is let go
    with pytest.raises(RuntimeError, match="this Trainer has finished"):
        trainer.step()
