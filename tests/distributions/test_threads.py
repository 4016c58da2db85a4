"""The CPU thread count: one for small models, the free cores for large ones, the user's OMP_NUM_THREADS kept."""

import pytest
import torch

from bayeslm import progress
from bayeslm.distributions import threads


@pytest.fixture
def fresh(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_chosen", None)
    monkeypatch.setattr(progress, "quiet", False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    yield
    torch.set_num_threads(before)


def test_a_small_model_gets_one_thread_and_says_so(fresh, capsys):
    assert threads.choose(30_000) == 1 == torch.get_num_threads()
    assert "1 CPU thread(s): a model of 0.03 M parameters is too small to share" in capsys.readouterr().err


def test_a_large_model_gets_every_core_and_a_busy_machine_is_told_how_to_choose(fresh, monkeypatch, capsys):
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.6, 1.0, 1.0))
    # never lowered on its own: the rounding depends on the count, and a resumed run must match the one it continues
    assert threads.choose(threads.SMALL) == 4 == torch.get_num_threads()
    err = capsys.readouterr().err
    assert "4 CPU thread(s): 4 core(s); the load average says 1 are busy" in err and "OMP_NUM_THREADS=3" in err
    assert threads.choose(1000) == 4  # a small reward model loaded next does not slow the large one


def test_omp_num_threads_is_the_users_choice(fresh, monkeypatch, capsys):
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose(1000) == 2 == torch.get_num_threads()
    assert capsys.readouterr().err == ""
