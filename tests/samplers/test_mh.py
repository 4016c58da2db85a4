"""Metropolis–Hastings with suffix regeneration against exact posteriors on the toy: independent chains (one kept
state each) pass χ² against enumeration, for a reward target and for the power target π0^α."""

import math

import pytest
from conftest import PROMPTS, chi_square_p, rows_of

import bayeslm as bl
from bayeslm.measurement.exact import Exact
from bayeslm.modelling.potentials import Exponential
from bayeslm.modelling.rewards import keyword
from bayeslm.samplers import mh

SIGNIFICANCE = 1e-3


@pytest.mark.parametrize("name, burn_in", [("reward", 15), pytest.param("power", 60, marks=pytest.mark.slow)])
def test_mh_chains_draw_from_the_exact_posterior(prior, name, burn_in):
    # π0^α mixes more slowly than the tilt by a reward: from position 0 a move is an independent proposal from π0.
    potential = Exponential(keyword(["good"]), beta=0.5) if name == "reward" else bl.power(prior, 2.0)
    target = (prior * potential).given(["the movie"], max_new_tokens=3)
    exact = Exact(target)
    draws = mh(target, n=600, chains=600, burn_in=burn_in, seed=3)  # one kept state per chain: independent
    assert chi_square_p(rows_of(draws, 0), exact.log_posterior[0].exp(), exact.sequences) > SIGNIFICANCE
    assert 0 < draws.acceptance_rate < 1 and draws.ess == 600
    assert abs(draws.log_z.value - exact.log_z.mean().item()) <= 4 * draws.log_z.stderr


def test_a_block_regenerates_from_its_multiples_and_kept_moves_report_their_autocorrelation(prior):
    target = (prior * bl.power(prior, 2.0)).given(PROMPTS, max_new_tokens=3)
    draws = mh(target, n=64, chains=8, burn_in=5, block=2, seed=4)
    assert draws.counts() == [64, 64]
    rho = draws.figures["autocorrelation"]
    assert rho and all(-1 <= r <= 1 for r in rho if math.isfinite(r))
    assert 0 < draws.ess <= 128


def test_mh_runs_from_the_command_line(tmp_path, capsys):
    from conftest import run, write

    path = write(tmp_path / "t.yaml", {"prior": {"toy": {"seed": 0}}, "prompts": PROMPTS, "max_new_tokens": 3,
                                       "potentials": [{"power": {"alpha": 2}}]})
    code, out, err = run(capsys, "sample", "--target", path, "--method", "mh", "-n", "8", "--chains", "4",
                         "--burn-in", "2", "--json")
    assert code == 0, err
    assert '"acceptance_rate"' in out or '"acceptance_rate"' in err
