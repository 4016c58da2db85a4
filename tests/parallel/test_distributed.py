"""Data-parallel training: two CPU processes (gloo, launched by torchrun) train as one process holding the whole
global batch, and only rank 0 writes the run."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import PROMPTS
from safetensors.torch import load_file

from bayeslm.config import ConfigError, load
from bayeslm.distributions.loading import load_lm
from bayeslm.measurement.reference import REFERENCE_SEED, Reference, reference
from bayeslm.measurement.scorecard import card, pool
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target_file import load_target
from bayeslm.parallel.distributed import Unit, World
from bayeslm.training.config import TrainConfig
from bayeslm.training.loop import Trainer
from bayeslm.training.setup import resolve_target

# Most tests here launch several processes (torchrun): a minute or more in all.
pytestmark = pytest.mark.distributed

TOY_TARGET = {"prior": {"toy": {"seed": 0, "train_steps": 0}}, "prompts": PROMPTS, "max_new_tokens": 3,
              "potentials": [{"exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5}}]}
SETTINGS = {"target": TOY_TARGET, "steps": 3, "prompts_per_step": 2, "samples_per_prompt": 4, "lr": 3e-3,
            "checkpoint_every": 2, "backward_batch_size": 8}
TIMING = {"samples_per_s", "tokens_per_s", "sample_seconds", "step_seconds"}
# The two runs draw the very same samples (each process takes whole micro-batches with the seeds one process would
# use), so they make the same floating-point operations but for the order of two sums: the loss summed per process
# then across processes, and two micro-batches' gradients added by gloo instead of accumulated in .grad; with two
# terms both sums are exact (hence a micro-batch back-propagated whole: backward_batch_size 8, not the CPU's default
# 4 rows, whose slices would add more terms in another order). We see bit-identical results; the relative 1e-9 only
# leaves room for BLAS rounding that could differ between processes, and is far below any real error (a gradient
# weighted wrongly, a figure of one shard instead of the global batch: those move the figures by percents).
RTOL = 1e-9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    # One BLAS thread per process, as torchrun sets it, for both runs alike.
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def _bayeslm(processes: int, *args: str, exit_code: int = 0) -> subprocess.CompletedProcess:
    launcher = [] if processes == 1 else [
        "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port())]
    done = subprocess.run([sys.executable, *launcher, "-m", "bayeslm", *args], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == exit_code, done.stderr[-3000:]
    return done


def _train(tmp_path, name: str, settings: dict, processes: int, *flags: str, exit_code: int = 0
           ) -> subprocess.CompletedProcess:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings))
    return _bayeslm(processes, "train", str(config), "--out", str(tmp_path / name), "--quiet", "--json", *flags,
                    exit_code=exit_code)


def _pool_of_halves(model, target, n: int, seed: int):
    """The evaluation pool two processes make: each half of every prompt's samples with its own seed."""
    halves = [pool(model, target, model.sample(target.prompts, n // 2, target.max_new_tokens, seed=seed + s))
              for s in (0, 1_000_003)]
    return ScoredSamples.cat(halves).sorted_by_prompt()


def _same(a, b, **tolerance) -> bool:
    """Figures agree within `tolerance`; words and flags (the proposal swap, `unreliable`) exactly."""
    if isinstance(a, float) and isinstance(b, float):
        return b == pytest.approx(a, **tolerance)
    return a == b


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_like_one_holding_the_global_batch(tmp_path):
    # dpg with the adaptive proposal: the running log Z and the proposal swap must agree across processes.
    settings = {**SETTINGS, "objective": "dpg", "grad_accum": 2, "eval_n": 8}
    _train(tmp_path, "one", settings, 1)
    two = _train(tmp_path, "two", settings, 2)
    one_records, two_records = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in two_records] == [1, 2, 3]  # one writer: no line twice
    for a, b in zip(one_records, two_records):
        assert a.keys() == b.keys()
        for key in a.keys() - TIMING:
            assert _same(a[key], b[key], rel=RTOL, abs=1e-12), (a["step"], key)
    assert two_records[-1]["samples_per_s"] > 0  # counted over the global batch: 2 × 2 prompts × 4 samples
    one_w, two_w = (load_file(tmp_path / run / "model/model.safetensors") for run in ("one", "two"))
    assert one_w.keys() == two_w.keys()
    assert all(torch.allclose(one_w[k], two_w[k], rtol=RTOL, atol=0) for k in one_w)
    # Each process drew half of every prompt's evaluation samples with its own seed; rank 0 pooled them, wrote
    # the scorecard and printed once. The same pool, made in one process from the saved model:
    config = load(TrainConfig, settings)
    target = resolve_target(config, tmp_path)
    model = load_lm(str(tmp_path / "two/model"), batch_size=config.batch_size).view(name="model")
    exact = reference(target)  # the toy's space is enumerated: the run's reference is exact
    expected = card(_pool_of_halves(model, target, 8, config.seed + 1), target, reference=exact, model=model).to_json()
    written = json.loads((tmp_path / "two/scorecard.json").read_text())
    assert written["n"] == 8 * len(PROMPTS)
    for key in ("log_z", "elbo", "eubo", "kl_model_target", "kl_model_prior", "reward_mean", "entropy"):
        assert written[key]["value"] == pytest.approx(expected[key]["value"], rel=1e-6), key
    assert two.stdout.count('"scorecard"') == 1
    assert sorted(p.name for p in (tmp_path / "two/checkpoints").iterdir()) == ["step-000002", "step-000003"]


def test_a_learned_log_z_is_fitted_alike_by_two_processes(tmp_path):
    # tb: the objective's own parameter (a log Z per prompt) is started from the same piece and its gradient summed
    # across processes like the model's.
    settings = {**SETTINGS, "objective": {"tb": {"proposal": "model"}}, "grad_accum": 2, "eval_n": 0}
    _train(tmp_path, "one", settings, 1)
    _train(tmp_path, "two", settings, 2)
    for a, b in zip(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"), strict=True):
        for key in a.keys() - TIMING:
            assert _same(a[key], b[key], rel=RTOL, abs=1e-12), (a["step"], key)


def test_evaluate_shares_the_sampling_between_processes(tmp_path):
    target_file = tmp_path / "target.yaml"
    target_file.write_text(yaml.safe_dump(TOY_TARGET))
    done = _bayeslm(2, "evaluate", "--target", str(target_file), "-n", "8", "--seed", "5", "--json",
                    "--reference-source", "prior", "--reference", "16")
    written = json.loads(done.stdout)  # printed once, by rank 0
    target = load_target(target_file)
    # The reference's prior samples are shared out between the processes too.
    shared = Reference.from_pool(_pool_of_halves(target.prior, target, 16, 5 + REFERENCE_SEED), target)
    expected = card(_pool_of_halves(target.prior, target, 8, 5), target, reference=shared, model=target.prior).to_json()
    assert written["reference"]["n"] == 16 and not written["reference"]["exact"]
    assert written["n"] == 8 * len(PROMPTS)
    for key in ("log_z", "elbo", "eubo", "kl_model_target", "reward_mean", "entropy", "distinct_2"):
        value = written[key]["value"] if isinstance(written[key], dict) else written[key]
        wanted = expected[key]["value"] if isinstance(expected[key], dict) else expected[key]
        assert value == pytest.approx(wanted, rel=1e-6), key


def test_micro_batches_split_between_processes_keep_beta_identical(tmp_path):
    # grad_accum 1 < 2 processes: each process samples one of the two prompts of the micro-batch (own seeds,
    # so no comparison with one process). The adaptive β is checked identical on both ranks after every step
    # (World.check_same would stop the run otherwise).
    settings = {**SETTINGS, "grad_accum": 1, "eval_n": 0, "objective": {"klrl": {"kl_budget": 0.01}}}
    _train(tmp_path, "split", settings, 2)
    records = _metrics(tmp_path / "split")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[-1]["beta"] != 0.5 and all(r["ess"] <= 8 for r in records)  # the global batch: 2 × 4 samples


@pytest.mark.parametrize("size, grad_accum, count", [(1, 3, 2), (2, 4, 2), (2, 1, 2), (3, 2, 5), (4, 2, 4)])
def test_units_cover_each_prompt_group_of_the_step_once(size, grad_accum, count):
    units = [u for rank in range(size) for u in World(rank, size).units(7, grad_accum, count, seed=3)]
    covered = sorted((u.draw, i) for u in units for i in range(u.start, u.stop))
    assert covered == [(d, i) for d in range(7 * grad_accum, 8 * grad_accum) for i in range(count)]
    assert len({u.seed for u in units}) == len(units)
    single = World().units(7, grad_accum, count, seed=3)
    if grad_accum % size == 0:  # whole micro-batches: exactly the single-process draws
        assert sorted(units, key=lambda u: u.key) == single
    for draw in range(7 * grad_accum, 8 * grad_accum):
        assert sum(u.fraction for u in units if u.draw == draw) == pytest.approx(1.0)


def test_more_processes_than_prompt_groups_is_a_config_error():
    with pytest.raises(ConfigError, match="grad_accum a multiple of 4"):
        World(1, 4).units(0, 1, 2, seed=0)


@pytest.mark.parametrize("objective", ["rl", "klrl"])
def test_split_pieces_weighted_by_their_share_give_the_whole_micro_batch_gradient(tmp_path, objective):
    config = load(TrainConfig, {**SETTINGS, "objective": objective, "samples_per_prompt": 3})
    trainer = Trainer.from_config(config, resolve_target(config, tmp_path), run_dir=tmp_path, quiet=True)
    whole = trainer.draw(World().units(0, 1, 2, seed=0)[0])

    def gradient(batch, weight):
        trainer.objective.loss(trainer.model, trainer.target.prior, batch).loss.mul(weight).backward()
        grads = [p.grad.clone() for p in trainer.params]
        trainer.optimizer.zero_grad(set_to_none=True)
        return grads

    expected = gradient(whole, 1.0)
    summed = [torch.zeros_like(g) for g in expected]
    for rank in range(2):
        unit = World(rank, 2).units(0, 1, 2, seed=0)[0]
        piece = whole.rows(unit.start * whole.group, unit.stop * whole.group)
        summed = [s + g for s, g in zip(summed, gradient(piece, unit.fraction))]
    assert all(torch.allclose(s, e, rtol=1e-5, atol=1e-7) for s, e in zip(summed, expected))


def test_one_process_is_the_default_world():
    assert World().units(2, 2, 3, seed=1) == [Unit(4, 0, 3, 1.0, 1_000_003 + 4), Unit(5, 0, 3, 1.0, 1_000_003 + 5)]


def test_deepspeed_is_refused_with_the_sharding_that_replaces_it(monkeypatch):
    from bayeslm.parallel import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="DeepSpeed is not supported.*sharding: full"):
        distributed.init()


# Sharded, the two runs differ in rounding only: the gradient norm is summed from shards, and sharded gradients
# are added by a reduce-scatter. Figures agree to a relative 1e-5. Weights agree to 1e-5 absolute: the attention
# key biases have a zero gradient in exact arithmetic (softmax ignores a constant added to every score), so AdamW
# turns their rounding noise into steps of up to lr (3e-3 here); we see 3e-6.
@pytest.mark.parametrize("extra", [{"objective": "dpg"}, {"objective": "klrl", "lora": {"r": 4}}],
                         ids=["dpg-full", "klrl-lora"])
def test_sharded_processes_train_like_one_holding_the_global_batch(tmp_path, extra):
    # dpg, full fine-tuning: π_θ, the prior and the adaptive proposal's copies sharded; klrl under LoRA: the
    # adapter and the prior share the sharded weights.
    # 8 samples per prompt: 32 a step, enough for the adaptive proposal's weights to be judged (it swaps at step 1)
    settings = {**SETTINGS, **extra, "steps": 4, "grad_accum": 2, "samples_per_prompt": 8, "eval_n": 8,
                "sharding": "full"}
    _train(tmp_path, "one", settings, 1)
    _train(tmp_path, "two", settings, 2)
    for a, b in zip(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"), strict=True):
        for key in a.keys() - TIMING:
            # k̂ fits the tail of the weights, which magnifies their rounding about tenfold. A KL near zero is a
            # mean of differences of log-probabilities of about 20 nats: their rounding (the weights' 1e-6) stays
            # absolute; we saw 1.4e-7 on KL(π‖π0) = 0.0086.
            assert _same(a[key], b[key], rel=1e-4 if key == "pareto_k" else 1e-5, abs=1e-6), (a["step"], key)
    one_w, two_w = (load_file(tmp_path / run / "model/model.safetensors") for run in ("one", "two"))
    assert one_w.keys() == two_w.keys()
    assert all(torch.allclose(one_w[k], two_w[k], rtol=0, atol=1e-5) for k in one_w)
    assert json.loads((tmp_path / "two/scorecard.json").read_text())["n"] == 8 * len(PROMPTS)
    if extra["objective"] == "dpg":  # resumed from a checkpoint of sharded weights, moments and proposal copy
        _train(tmp_path, "resumed", {**settings, "steps": 3}, 2)  # the proposal became a copy at step 1
        assert json.loads((tmp_path / "resumed/checkpoints/step-000003/state.json").read_text())["proposal_is_copy"]
        _train(tmp_path, "resumed", settings, 2, "--resume")
        for a, b in zip(_metrics(tmp_path / "two"), _metrics(tmp_path / "resumed"), strict=True):
            assert all(_same(a[key], b[key], rel=1e-6) for key in a.keys() - TIMING), a["step"]


def test_sharding_with_micro_batches_split_between_processes_is_a_config_error(tmp_path):
    # Each process exits 2 (a config error); torchrun, seeing its children fail, exits 1.
    done = _train(tmp_path, "split", {**SETTINGS, "grad_accum": 1, "sharding": "full"}, 2, exit_code=1)
    assert "make grad_accum (now 1) a multiple of the 2 processes" in done.stderr
    assert not (tmp_path / "split").exists()  # refused before the run directory was made


def test_sharding_with_compiled_decoding_is_a_config_error(tmp_path):
    done = _train(tmp_path, "compiled", {**SETTINGS, "grad_accum": 2, "sharding": "full", "decoding": "compiled"}, 2,
                  exit_code=1)
    assert "decoding: compiled is not supported with sharding: full; use decoding: eager" in done.stderr
    assert not (tmp_path / "compiled").exists()
