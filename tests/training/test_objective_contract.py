"""What every registered objective must satisfy, checked on each: its state survives a checkpoint, and its loss
has no gradient where the model already is the target."""

import copy

import pytest
from conftest import PROMPTS, config

from bayeslm.modelling.potentials import Exponential
from bayeslm.modelling.rewards import Reward
from bayeslm.parallel.distributed import Unit
from bayeslm.training.loop import Trainer
from bayeslm.training.objectives import OBJECTIVES
from bayeslm.training.setup import resolve_target


@pytest.fixture(params=OBJECTIVES.names())
def name(request):
    return request.param


def test_state_round_trips_through_a_checkpoint(tmp_path, name):
    trainer_config = config(objective=name, steps=2, eval_n=0, checkpoint_every=1)
    trainer = Trainer.from_config(trainer_config, resolve_target(trainer_config, tmp_path),
                                  run_dir=tmp_path, quiet=True)
    for _ in range(2):
        trainer.step()
    trainer.save_checkpoint()
    state = trainer.objective.state_dict()
    resumed = Trainer.from_config(trainer_config, resolve_target(trainer_config, tmp_path),
                                  run_dir=tmp_path, quiet=True)
    assert resumed.resume()
    assert resumed.objective.state_dict() == state
    assert resumed.objective == trainer.objective  # the options too


def test_loss_has_no_gradient_where_the_model_is_the_target(tmp_path, name, prior):
    """A reward that is the same for every text makes π* = π0, and the model starts as π0: every objective
    (even pure RL, for which every distribution is then optimal) must leave it there."""
    flat = Reward(lambda texts, prompts: [0.25] * len(texts), "flat")
    target = (prior * Exponential(flat, beta=0.5)).given(PROMPTS, max_new_tokens=4)
    trainer = Trainer.from_config(config(objective=name, samples_per_prompt=8), copy.deepcopy(target),
                                  run_dir=tmp_path, quiet=True)
    batch = trainer.draw(Unit(0, 0, 2, 1.0, seed=5))
    assert len(set(batch.continuations[i][0] for i in range(len(batch)))) > 1  # the samples differ
    trainer.objective.loss(trainer.model, trainer.target.prior, batch).loss.backward()
    largest = max(p.grad.abs().max().item() for p in trainer.params if p.grad is not None)
    assert largest < 1e-6, largest
