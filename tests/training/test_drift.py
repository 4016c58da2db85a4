"""A run that leaves π* behind says so while it trains: its batches' ELBO falling means KL(q‖π*) growing."""

from conftest import TOY_TARGET

import bayeslm as bl
from bayeslm.measurement.report import write_report
from bayeslm.modelling.target_file import parse_target
from bayeslm.training.drift import WINDOW, Drift


def test_a_falling_elbo_is_said_once_and_a_noisy_flat_one_never():
    drift = Drift()
    said = [drift.observe({"step": i + 1, "elbo": 1.0 - 0.5 * i + 0.01 * (-1) ** i}) for i in range(4 * WINDOW)]
    assert sum(s is not None for s in said) == 1 and "moving away from the target" in next(filter(None, said))
    flat = Drift()
    assert all(flat.observe({"step": i + 1, "elbo": (-1) ** i * 2.0}) is None for i in range(4 * WINDOW))


def test_pure_rl_run_to_collapse_is_said_to_leave_the_target_while_it_trains_and_in_the_report(capsys, tmp_path):
    target = parse_target(TOY_TARGET)
    run = bl.train(target, bl.RL(), steps=40, lr=3e-2, samples_per_prompt=8, eval_n=0, quiet=True,
                   out=tmp_path / "run")
    assert any(record.get("leaving_target") for record in run.metrics)
    assert "bayeslm: warning: step" in capsys.readouterr().err
    page = write_report(tmp_path / "run")[0].read_text()
    assert "id=leaving" in page and "The run left π* behind" in page


def test_kl_rl_towards_the_target_is_not(capsys):
    target = parse_target(TOY_TARGET)
    run = bl.train(target, bl.KLRL(), steps=30, lr=3e-3, samples_per_prompt=8, eval_n=0, quiet=True)
    assert not any(record.get("leaving_target") for record in run.metrics)
    assert "moving away" not in capsys.readouterr().err
