"""The pieces of fully sharded training on a one-process group (two processes: tests/test_distributed.py)."""

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from bayeslm.distributions.loading import load_lm
from bayeslm.parallel import sharding


@pytest.fixture
def group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _toy():
    return load_lm({"toy": {"seed": 0}}).model


def test_a_plain_copy_has_the_sharded_weights_ties_and_outputs(group):
    original, net = _toy(), _toy()
    shard = sharding.Sharded.of(net)
    assert isinstance(net.transformer.h[0].attn.c_attn.weight, DTensor)
    assert not isinstance(net.transformer.wte.weight, DTensor)  # only decoder layers are sharded
    plain = shard.plain()
    assert not any(isinstance(p, DTensor) for p in plain.parameters())
    assert plain.lm_head.weight is plain.transformer.wte.weight  # still tied
    expected = dict(original.named_parameters())
    assert all(torch.equal(p, expected[name]) for name, p in plain.named_parameters())
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        reference = original(input_ids=ids).logits
        assert torch.equal(plain(input_ids=ids).logits, reference)
        with sharding.gathered([net]):
            assert not isinstance(net.transformer.h[0].attn.c_attn.weight, DTensor)
            assert torch.equal(net(input_ids=ids).logits, reference)
    assert isinstance(net.transformer.h[0].attn.c_attn.weight, DTensor)  # sharded again after


def test_the_clipped_gradient_is_torchs_on_a_mix_of_sharded_and_whole_weights(group):
    original, net = _toy(), _toy()
    sharding.Sharded.of(net)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    for model in (original, net):
        model(input_ids=ids, labels=ids).loss.backward()
    expected = torch.nn.utils.clip_grad_norm_(list(original.parameters()), 0.1)
    norm = sharding.clip_grad_norm_(list(net.parameters()), 0.1)
    assert norm == pytest.approx(expected.item(), rel=1e-6)
    grads = {name: sharding.full(p.grad) for name, p in net.named_parameters()}
    assert all(torch.allclose(grads[name], p.grad, rtol=1e-5, atol=1e-9) for name, p in original.named_parameters())


def test_whole_state_and_shards_round_trip(group):
    net = _toy()
    sharding.Sharded.of(net)
    weight = net.transformer.h[1].mlp.c_fc.weight
    whole = sharding.full({"w": [weight], "step": torch.tensor(3.0)})
    assert not isinstance(whole["w"][0], DTensor) and whole["step"] == 3.0
    back = sharding.like(whole["w"][0], weight)
    assert isinstance(back, DTensor) and torch.equal(back.to_local(), weight.to_local())
    assert sharding.like(whole["step"], None) is whole["step"]
