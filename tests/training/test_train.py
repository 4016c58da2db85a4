"""The one training loop: objectives, LoRA, precision, checkpoints and exact resume, configs."""

import json
import math

import pytest
import torch
from conftest import PROMPTS, TOY_TARGET, config, metrics

from bayeslm.config import ConfigError, override
from bayeslm.distributions.loading import load_lm
from bayeslm.modelling.potentials import Constraint, Exponential
from bayeslm.modelling.rewards import keyword
from bayeslm.training.config import load_config
from bayeslm.training.loop import Trainer
from bayeslm.training.run import train
from bayeslm.training.stepper import TrainingDiverged

TIMING = {"samples_per_s", "tokens_per_s", "sample_seconds", "step_seconds"}


@pytest.mark.parametrize("objective", ["rl", "klrl", "dpg", "fdpg"])
def test_every_objective_trains_and_writes_a_run(tmp_path, objective):
    result = train(config(objective=objective), tmp_path / "run", quiet=True)
    run = tmp_path / "run"
    # The run's metrics are the file's, but for infinities (k̂ of too few samples), which JSON writes as null
    in_memory = [{k: None if isinstance(v, float) and math.isinf(v) else v for k, v in r.items()}
                 for r in result.metrics]
    assert result.directory == run and in_memory == metrics(run)
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "model",
                                               "scorecard.json"}
    records = metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("reward_mean", "kl_model_prior", "elbo", "log_z", "kl_model_target", "kl_target_model", "entropy",
                "distinct_2", "ess", "loss", "grad_norm", "lr", "samples_per_s", "tokens_per_s"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert result.scorecard.n == 100 and json.loads((run / "scorecard.json").read_text())["n"] == 100
    # The saved model is a plain HF model that evaluates against the same target.
    saved = load_lm(str(run / "model"))
    assert saved.model.config.vocab_size == 8


def test_klrl_identity_and_kl_estimators(tmp_path):
    for estimator in ("analytic", "k1", "k3"):
        run = tmp_path / estimator
        train(config(objective={"klrl": {"kl": estimator}}), run, quiet=True)
        assert all(r["kl_model_prior"] >= 0 for r in metrics(run)) or estimator == "k1"


def test_ppo_epochs_and_adaptive_beta(tmp_path):
    train(config(objective={"klrl": {"ppo_epochs": 3, "clip": 0.2, "kl_budget": 0.01}}), tmp_path / "r",
          quiet=True)
    betas = [r["beta"] for r in metrics(tmp_path / "r")]
    assert betas[-1] != 0.5 and all(b > 0 for b in betas)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    straight = tmp_path / "straight"
    train(config(objective="dpg", steps=6, eval_n=0), straight, quiet=True)
    interrupted = tmp_path / "interrupted"
    train(config(objective="dpg", steps=3, eval_n=0), interrupted, quiet=True)
    train(config(objective="dpg", steps=6, eval_n=0), interrupted, resume=True, quiet=True)
    a, b = metrics(straight), metrics(interrupted)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {k: v for k, v in rb.items() if k not in TIMING}
    wa = load_lm(str(straight / "model")).model.state_dict()
    wb = load_lm(str(interrupted / "model")).model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    run = tmp_path / "run"
    train(config(steps=4, eval_n=0, keep_checkpoints=2), run, quiet=True)
    latest = sorted((run / "checkpoints").glob("step-*"))[-1]
    (latest / "optimizer.pt").write_bytes(b"truncated")
    train(config(steps=4, eval_n=0), run, resume=True, quiet=False)
    err = capsys.readouterr().err
    assert "unreadable" in err and "resumed from" in err and "step-000002" in err


def test_an_existing_run_is_never_overwritten_silently(tmp_path):
    run = tmp_path / "run"
    train(config(steps=1, eval_n=0), run, quiet=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config(steps=1, eval_n=0), run, quiet=True)
    train(config(steps=1, eval_n=0), run, overwrite=True, quiet=True)


def test_lora_prior_is_the_base_with_the_adapter_off(tmp_path, monkeypatch):
    run = tmp_path / "lora"
    trainer_config = config(objective="klrl", lora={"r": 4}, steps=3, lr=1e-2, eval_n=0)
    from bayeslm.training.setup import resolve_target

    target = resolve_target(trainer_config, tmp_path)
    samples = target.prior.sample(PROMPTS, 8, 3, seed=0)
    before = target.prior.log_prob(samples.sample_prompts, samples.continuations).detach()
    trainer = Trainer.from_config(trainer_config, target, run_dir=run, quiet=True)
    for _ in range(3):
        trainer.step()
    prior_now = trainer.target.prior.log_prob(samples.sample_prompts, samples.continuations).detach()
    model_now = trainer.model.log_prob(samples.sample_prompts, samples.continuations).detach()
    assert torch.allclose(prior_now, before, atol=1e-6)  # the prior did not move
    assert not torch.allclose(model_now, before, atol=1e-3)  # the model did
    # Sampling the prior switches the adapter off once for all its decoding steps, and back on after.
    tuner, switches = trainer.model.model.base_model, []
    monkeypatch.setattr(tuner, "disable_adapter_layers",
                        lambda switch=tuner.disable_adapter_layers: switches.append(switch()))
    again = trainer.target.prior.sample(PROMPTS, 8, 3, seed=0)
    assert len(switches) == 1
    assert torch.equal(again.tokens, samples.tokens)
    assert torch.allclose(again.token_log_probs, samples.token_log_probs, atol=1e-6)
    assert torch.equal(trainer.model.log_prob(samples.sample_prompts, samples.continuations).detach(), model_now)
    trained = sum(p.numel() for p in trainer.model.model.parameters() if p.requires_grad)
    assert trained < sum(p.numel() for p in trainer.model.model.parameters()) / 2
    trainer.finish()
    merged = load_lm(str(run / "model"))  # merged into a plain model
    assert torch.allclose(merged.log_prob(samples.sample_prompts, samples.continuations), model_now, atol=1e-4)


def test_bf16_training_keeps_sampler_and_scorer_in_agreement(tmp_path):
    from bayeslm.training.setup import resolve_target

    trainer_config = config(objective="klrl", precision="bf16", steps=2)
    trainer = Trainer.from_config(trainer_config, resolve_target(trainer_config, tmp_path),
                                  run_dir=tmp_path, quiet=True)
    trainer.step()
    samples = trainer.model.sample(PROMPTS, 16, 3, seed=1)
    rescored = trainer.model.log_prob(samples.sample_prompts, samples.continuations).cpu()
    # bf16 matrix products: cached decoding and a full pass round differently; a stated 0.05-nat tolerance.
    assert torch.allclose(rescored, samples.log_prob, atol=5e-2)


def test_constraint_target_trains_with_dpg_and_is_refused_by_klrl(prior, tmp_path):
    target = (prior * Constraint(keyword(["good"]))).given(PROMPTS, max_new_tokens=3)
    # The prior satisfies the constraint with probability 0.37 and 0.23 (exact): with 32 samples per prompt a step
    # finds no satisfying sample for a prompt with probability < 4e-4 (with 4, 0.36).
    dpg = Trainer.from_config(config(objective={"dpg": {"proposal": "prior"}}, samples_per_prompt=32), target,
                              run_dir=tmp_path / "dpg", quiet=True)
    dpg.step()
    klrl = Trainer.from_config(config(objective="klrl"), target, run_dir=tmp_path / "klrl", quiet=True)
    with pytest.raises(ValueError, match="Use the dpg objective"):
        klrl.step()


def test_diverging_loss_stops_with_the_step_named(prior, tmp_path):
    target = (prior * Exponential(lambda t, p: [1e30 if "good" in s else 0.0 for s in t], beta=1e-30)).given(
        PROMPTS, max_new_tokens=3)
    trainer = Trainer.from_config(config(objective="rl"), target, run_dir=tmp_path, quiet=True)
    with pytest.raises(TrainingDiverged, match="step 1: the loss"):
        for _ in range(4):
            trainer.step()


@pytest.mark.parametrize("settings, message", [
    ({"stepz": 3}, "unknown key(s) ['stepz']"),
    ({"steps": 0}, "steps: must be > 0"),
    ({"objective": "ppo"}, "objective: unknown objective 'ppo'; expected one of dpg, fdpg, klrl, rl"),
    ({"objective": {"klrl": {"kl_estimator": "k3"}}}, "objective.klrl: unknown key(s) ['kl_estimator']"),
    ({"klrl": {"clip": 0.2}}, "klrl: this section has moved into the objective; write objective: {klrl: {...}}"),
    ({"samples_per_prompt": 1}, "samples_per_prompt: must be >= 2"),
    ({"lr": "fast"}, "lr: expected a number"),
    ({"objective": {"klrl": {"clip": 2}}}, "objective.klrl.clip: must be in (0, 1)"),
    ({"lora": {"rank": 4}}, "lora: unknown key(s) ['rank']"),
])
def test_config_errors_name_the_key(settings, message):
    with pytest.raises(ConfigError) as error:
        load_config({"target": "t.yaml", **settings})
    assert message in str(error.value)


def test_set_overrides_nested_keys():
    data = override({"target": "t.yaml", "objective": {"klrl": {"clip": 0.2}}}, "objective.klrl.kl=k3")
    data = override(data, "steps=7")
    parsed = load_config(data)
    assert parsed.objective.kl == "k3" and parsed.objective.clip == 0.2 and parsed.steps == 7
    # An objective named alone (`objective: klrl`) takes options by --set too.
    assert load_config(override({"objective": "klrl"}, "objective.klrl.clip=0.3")).objective.clip == 0.3


@pytest.mark.slow
def test_reproduce_shows_the_papers_claims_on_exact_numbers(tmp_path):
    from bayeslm.experiments.reproduce import reproduce

    # The default 300 steps: at 120, pure RL had collapsed onto the argmax under one random stream and still sat on
    # reward-1 sequences (entropy 0.82 nats) under another; at 300 it reached entropy 0.014, argmax mass 0.999.
    report = reproduce(steps=300, bimodal_steps=120, figure=tmp_path / "curves.png")
    assert all(report["claims"].values()), report["claims"]
    assert report["identity_error"] < 1e-5
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    for method in ("rl", "klrl", "dpg", "fdpg-js", "tb", "tb-prior"):
        curve = report["methods"][method]["curve"]
        assert len(curve) == 301 and set(curve[0]) >= {"kl_model_target", "kl_target_model", "entropy"}


def test_dpg_keeps_one_log_z_per_prompt(prior, tmp_path):
    from bayeslm.measurement.exact import Exact

    target = (prior * Constraint(keyword(["good"]))).given(PROMPTS, max_new_tokens=3)
    trainer = Trainer.from_config(config(objective={"dpg": {"proposal": "prior"}}, samples_per_prompt=64), target,
                                  run_dir=tmp_path, quiet=True)
    for _ in range(3):
        trainer.step()
    exact = Exact(target)
    estimated = [trainer.objective.running_log_z.value(p) for p in PROMPTS]
    assert estimated[0] != estimated[1]
    assert torch.allclose(torch.tensor(estimated, dtype=torch.float64), exact.log_z, atol=0.3)


def test_resume_refuses_a_changed_config(tmp_path):
    run = tmp_path / "run"
    train(config(steps=2, eval_n=0), run, quiet=True)
    with pytest.raises(ConfigError, match=r"\['lr'\] changed"):
        train(config(steps=4, eval_n=0, lr=1e-2), run, resume=True, quiet=True)


def test_lora_run_leaves_the_callers_prior_scoring_the_prior(tmp_path):
    from bayeslm.measurement.scorecard import scorecard
    from bayeslm.training.setup import resolve_target

    trainer_config = config(objective="klrl", lora={"r": 4}, steps=2, lr=1e-2, eval_n=0)
    target = resolve_target(trainer_config, tmp_path)
    samples = target.prior.sample(PROMPTS, 8, 3, seed=0)
    before = target.prior.log_prob(samples.sample_prompts, samples.continuations).detach()
    trainer = Trainer.from_config(trainer_config, target, run_dir=tmp_path, quiet=True)
    trainer.step()
    trainer.step()
    after = target.prior.log_prob(samples.sample_prompts, samples.continuations).detach()
    assert torch.allclose(after, before, atol=1e-6)
    assert scorecard(trainer.model, target, n=20)["kl_model_prior"].value > 0


def test_gradient_accumulation_averages_micro_batches(tmp_path):
    run = tmp_path / "accum"
    train(config(objective="klrl", grad_accum=2, steps=2, eval_n=0), run, quiet=True)
    records = metrics(run)
    # Two micro-batches of 2 prompts x 4 samples per step.
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["ess"] <= 16 + 1e-9 and r["ess"] > 4 for r in records)


@pytest.mark.parametrize("objective", ["rl", "klrl", "dpg", "fdpg"])
def test_backward_in_slices_of_prompt_groups_gives_the_whole_batch_gradient(tmp_path, objective):
    import copy

    from bayeslm.parallel.distributed import Unit
    from bayeslm.training.setup import resolve_target

    # Up to 8 tokens: samples end at EOS at different lengths, so a slice's longest continuation can be shorter
    # than the batch's (its token columns are then cut to it).
    trainer_config = config(objective=objective, prompts_per_step=2, samples_per_prompt=2,
                            target={**TOY_TARGET, "max_new_tokens": 8})
    trainer = Trainer.from_config(trainer_config, resolve_target(trainer_config, tmp_path),
                                  run_dir=tmp_path, quiet=True)
    batch = trainer.draw(Unit(0, 0, 2, 1.0, seed=21))  # a seed that builds the case (asserted below)
    assert batch.mask[:2].sum(1).max() < batch.mask.shape[1]  # the first prompt group's samples are shorter
    assert all(len(set(batch.reward[i:i + 2].tolist())) == 2 for i in (0, 2))  # else dpg's gradient is 0
    results, state = [], copy.deepcopy(trainer.objective.state_dict())
    for rows in (64, 2, 3):  # whole batch; one prompt group (2 samples) at a time; 3 rounds down to one group
        trainer.config.backward_batch_size = rows
        trainer.objective.load_state_dict(copy.deepcopy(state))  # dpg/fdpg: the same running log Z each time
        out = trainer.backward(batch, 0.5)
        results.append((out, [p.grad.clone() for p in trainer.params]))
        trainer.optimizer.zero_grad(set_to_none=True)
    (whole, whole_grads), *sliced = results
    for out, grads in sliced:
        assert out.loss.item() == pytest.approx(whole.loss.item(), rel=1e-5, abs=1e-6)
        assert torch.allclose(out.log_model, whole.log_model, atol=1e-5)
        for g, w in zip(grads, whole_grads):
            assert torch.allclose(g, w, rtol=1e-4, atol=1e-6 * w.abs().max().item())


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_same_gradient(tmp_path, lora):
    from bayeslm.parallel.distributed import Unit
    from bayeslm.training.setup import resolve_target

    grads, outs = [], []
    for checkpointing in (False, True):
        trainer_config = config(objective="klrl", prompts_per_step=2, gradient_checkpointing=checkpointing,
                                lora={"r": 4} if lora else None)
        trainer = Trainer.from_config(trainer_config, resolve_target(trainer_config, tmp_path),
                                      run_dir=tmp_path / str(checkpointing), quiet=True)
        if not outs:
            batch = trainer.draw(Unit(0, 0, 2, 1.0, seed=3))
        outs.append(trainer.backward(batch, 1.0))
        grads.append([p.grad.clone() for p in trainer.params])
        assert not trainer.model.model.training  # back in eval mode: sampling never sees training mode
    assert torch.allclose(outs[0].log_model, outs[1].log_model, atol=1e-6)
    for plain, recomputed in zip(*grads):
        assert torch.allclose(plain, recomputed, rtol=1e-4, atol=1e-6 * plain.abs().max().item())


def test_gradient_checkpointing_refuses_a_model_with_dropout(tmp_path, prior):
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(prior.model.config.__class__(**{**prior.model.config.to_dict(), "resid_pdrop": 0.1}))
    model.save_pretrained(tmp_path / "dropout")
    prior.tokenizer.save_pretrained(tmp_path / "dropout")
    with pytest.raises(ConfigError, match="active dropout"):
        train(config(gradient_checkpointing=True, model=str(tmp_path / "dropout")), tmp_path / "run", quiet=True)


@pytest.mark.parametrize("estimator", ["analytic", "k1"])
def test_klrl_takes_log_prior_from_its_own_prior_pass(tmp_path, estimator):
    from bayeslm.training.setup import resolve_target

    records = []
    for own_pass in (True, False):
        trainer_config = config(objective={"klrl": {"kl": estimator}})
        trainer = Trainer.from_config(trainer_config, resolve_target(trainer_config, tmp_path),
                                      run_dir=tmp_path / str(own_pass), quiet=True)
        trainer.objective.scores_prior = own_pass  # False: the batch is scored under the prior beforehand
        records.append([trainer.step() for _ in range(2)])
    for with_own, scored_before in zip(*records):
        for key in with_own.keys() - TIMING:
            assert math.isfinite(with_own[key]) == math.isfinite(scored_before[key]), key
            if math.isfinite(with_own[key]):
                assert with_own[key] == pytest.approx(scored_before[key], rel=1e-5, abs=1e-6), key


def test_a_rare_constraint_unmet_by_the_first_batches_gives_zero_weights_not_a_stop(capsys):
    from bayeslm.training.objectives.log_z import RunningLogZ

    running = RunningLogZ()
    unmet = running.update(torch.full((4,), -math.inf, dtype=torch.float64), ["a"] * 4)
    assert torch.exp(torch.full((4,), -math.inf, dtype=torch.float64) - unmet).eq(0).all()  # P/(Ẑq) = 0, not NaN
    assert "no sample yet satisfies the target for prompt(s) ['a']" in capsys.readouterr().err
    met = running.update(torch.tensor([-math.inf, 0.0, -math.inf, -math.inf], dtype=torch.float64), ["a"] * 4)
    assert met.tolist() == pytest.approx([math.log(1 / 8)] * 4)  # one weight of 1 among the 8 samples seen
