"""Fully sharded training (`sharding: full`, FSDP2's `fully_shard`): each process keeps 1/N of every decoder layer's
weights, gradients and AdamW state, and gathers a layer's whole weights only while it runs.

Only the decoder layers are sharded, the bulk of a large model. The rest (embeddings, final norm, output head)
stays whole on every process, so `bayeslm.distributions.head` reads the output head directly, and its gradients are
all-reduced as in data parallelism (`World.sum_gradients`). Gradients of sharded weights are summed, not
averaged, by the reduce-scatter in the backward pass: each process weighs its losses by its share of the
global batch already.

A sharded layer gathers its weights in a collective inside every forward pass, so all processes must run the
same passes in step. The loss does: every process holds whole micro-batches of the same size (`grad_accum` a
multiple of the number of processes), so the same passes run everywhere. Sampling does not (a process stops
decoding when its own rows have ended), so sampling and scoring without gradient run inside `gathered`: every
layer's weights gathered once, held whole, and freed after (the memory of inference, as with ZeRO-3 engines
gathering weights for generation).

Frozen models sharded too (the prior of full fine-tuning, the adaptive proposal's copy) need no optimiser state.
Whatever must see a whole model (a checkpoint, the final evaluation and the saved model, a proposal copy) gets
a plain copy from `Sharded.plain`: the architecture kept on the meta device, filled with the gathered weights.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from bayeslm.config import ConfigError


@dataclass(frozen=True)
class Sharded:
    """A model whose decoder layers are sharded across the processes, with a skeleton to rebuild it whole."""

    net: torch.nn.Module
    skeleton: torch.nn.Module  # the same modules, parameters on the meta device (buffers kept: rotary tables)

    @classmethod
    def of(cls, net: torch.nn.Module) -> Sharded:
        """Shards `net`'s decoder layers in place (every process, with the same weights)."""
        meta = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
                for p in net.parameters()}
        skeleton = copy.deepcopy(net, memo=meta)  # no second copy of the weights
        causal = net.get_base_model() if hasattr(net, "get_base_model") else net
        kinds = set(getattr(causal, "_no_split_modules", None) or ())
        decoder = causal.get_decoder()
        # The outermost matches inside the decoder: FSDP shards inner modules before the ones holding them.
        layers, names = [], []
        for name, m in decoder.named_modules():
            if type(m).__name__ in kinds and not any(name.startswith(outer + ".") for outer in names):
                layers.append(m)
                names.append(name)
        if not layers:
            raise ConfigError(f"sharding: full: cannot find the decoder layers of {type(causal).__name__} (it names "
                              "no _no_split_modules); set sharding: none")
        for layer in layers:
            fully_shard(layer)
            layer.set_gradient_divide_factor(1.0)  # summed: each process has weighted its share already
            layer.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
        # The decoder (every pass goes through it, `bayeslm.distributions.head`'s too) becomes the root, holding no
        # weights of its own: FSDP keeps a root's weights gathered after its forward pass, so each layer as its own
        # root would stay whole from its forward pass to its backward pass.
        own = {p for p in decoder.parameters()} - {p for layer in layers for p in layer.parameters()}
        fully_shard(decoder, ignored_params=own)
        return cls(net, skeleton)

    def plain(self, *, keep: bool = True) -> torch.nn.Module | None:
        """A whole, unsharded copy (on the CPU) of the current weights. A collective: every process calls it; with
        keep=False this process only helps gather and gets None."""
        whole = {}  # a tied weight once, under its first name
        for name, p in self.net.named_parameters():
            value = p.full_tensor() if isinstance(p, DTensor) else p
            if keep:
                whole[name] = value.detach().to("cpu", copy=True)
        if not keep:
            return None
        net = copy.deepcopy(self.skeleton)
        made = {}  # skeleton parameter -> its filled one: tied weights stay tied
        for name, old in net.named_parameters(remove_duplicate=False):
            if id(old) not in made:
                made[id(old)] = torch.nn.Parameter(whole[name], requires_grad=old.requires_grad)
            owner, _, attr = name.rpartition(".")
            setattr(net.get_submodule(owner), attr, made[id(old)])
        return net


@contextlib.contextmanager
def gathered(nets):
    """Within: every sharded layer of `nets` holds its whole weights, so passes need no collective and processes
    may run different numbers of them. Entering and leaving are collectives (every process, in the same order)."""
    layers = list(dict.fromkeys(m for net in nets for m in net.modules() if isinstance(m, FSDPModule)))
    for layer in layers:
        layer.unshard()
        layer.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for layer in layers:
            layer.reshard()
            layer.set_reshard_after_forward(True, recurse=False)


def clip_grad_norm_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ for a mix of sharded and whole parameters (torch's refuses the mix): the
    norm of the whole gradient, the sharded parts' squares summed over processes. A collective."""
    grads = [p.grad for p in params if p.grad is not None]
    whole = sum((g.float().pow(2).sum() for g in grads if not isinstance(g, DTensor)), torch.zeros(()))
    shards = [g.to_local().float().pow(2).sum() for g in grads if isinstance(g, DTensor)]
    squares = whole.to(grads[0].device) if grads else whole
    if shards:
        total = torch.stack(shards).sum()
        torch.distributed.all_reduce(total)
        squares = squares + total
    norm = squares.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype).item() if isinstance(g, DTensor) else scale.to(g.dtype))
    return norm


def full(value, *, keep: bool = True):
    """`value` (a tensor, or a state dict nested in dicts and lists) with every sharded tensor gathered whole onto
    the CPU, one at a time (a GPU never holds more than one whole tensor); with keep=False this process only helps
    gather and its gathered tensors are None. A collective: every process, the same structure."""
    if isinstance(value, DTensor):
        whole = value.full_tensor()  # every process takes part in the gather, kept or not
        return whole.cpu() if keep else None
    if isinstance(value, dict):
        return {k: full(v, keep=keep) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(full(v, keep=keep) for v in value)
    return value


def like(value: torch.Tensor, reference) -> torch.Tensor:
    """This process's shard of the whole tensor `value`, laid out as `reference` (returned as is unless the
    reference is sharded). Local: every process holds the whole value."""
    if not isinstance(reference, DTensor):
        return value
    return distribute_tensor(value.detach().to(reference.dtype), reference.device_mesh, reference.placements,
                             src_data_rank=None)
