"""Running an LM token by token over a batch of token rows, keeping its KV cache: the engine under `LM.sample`
and SMC.

Two decoders give the same distributions (the same tokens from the same seed, up to floating-point rounding):

* `Decoder` (`decoding: eager`) grows transformers' dynamic cache by one column per token;
* `StaticDecoder` (`decoding: compiled`) writes into a cache allocated once for the whole continuation and runs
  each step as one compiled graph (`torch.compile`; on a GPU captured as a CUDA graph, "reduce-overhead"). A
  decoding step of a 135 M–1 B model at 64 rows is bound by kernel launches on a GPU, not by FLOPs
  (bench/RESULTS.md §6), and a captured graph launches once per step. Each new shape (rows, and the prompt width
  plus the new tokens rounded up to `LENGTH_BUCKET`) compiles once, tens of seconds, and its cache stays
  allocated for the next batch while the model lives. On a CPU compiled decoding ran at 0.94× eager (bench/
  RESULTS.md, speed finding 15), so eager stays the default.

Both take left-padded prompts, so that every row's next token goes in the same column; a prompt's n samples
share its pass and then copies of its cache.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Sequence

import torch

from bayeslm.lm import distinct, pad, positions

if TYPE_CHECKING:
    from bayeslm.lm import LM

# Cache lengths are rounded up to a multiple of this, so that prompts of nearby lengths share one compiled graph.
LENGTH_BUCKET = 64
# Static caches that finished decoders handed back, per model: a CUDA graph reads its cache at fixed addresses,
# so a new cache for every batch would be captured again every batch.
_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_COMPILED = {}


class Decoder:
    """`logits` [B, V] predict each row's next token; `feed` appends one token to every row."""

    def __init__(self, lm: LM, rows: Sequence[Sequence[int]]):
        prompts, which = distinct(rows, lm.device)
        ids, mask = pad(prompts, lm.pad_id, "left")
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        out = lm.forward(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True,
                         logits_to_keep=1)
        self.lm, self.mask, self.logits, self.cache = lm, mask[which], out.logits[which, -1], out.past_key_values
        self.positions = positions(self.mask)[:, -1:]
        if len(prompts) < len(rows):
            self.cache.reorder_cache(which)

    def feed(self, tokens: torch.Tensor):
        """Appends one token [B] to every row."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], 1)
        self.positions = self.positions + 1
        out = self.lm.forward(input_ids=tokens.to(self.mask.device)[:, None], attention_mask=self.mask,
                              position_ids=self.positions, past_key_values=self.cache, use_cache=True)
        self.logits, self.cache = out.logits[:, -1], out.past_key_values

    def reorder(self, index: torch.Tensor):
        """Keeps rows `index` (with repeats): resampling particles moves their caches with them."""
        index = index.to(self.mask.device)
        self.mask, self.positions, self.logits = self.mask[index], self.positions[index], self.logits[index]
        self.cache.reorder_cache(index)

    def close(self):
        """Done decoding (a static decoder hands its cache back for the next batch)."""


class StaticDecoder(Decoder):
    """The same decoding on a static cache with a compiled step (see the module's docstring).

    The prompts run eagerly (their widths vary) into a dynamic cache, which is then copied into a static one of
    `prompt width + max_new_tokens` columns, rounded up to `LENGTH_BUCKET`. The mask is that wide from the start:
    step t switches on column `width + t`, so every step has the same shapes."""

    def __init__(self, lm: LM, rows: Sequence[Sequence[int]], max_new_tokens: int):
        super().__init__(lm, rows)
        width = self.mask.shape[1]
        length = -(-(width + max_new_tokens) // LENGTH_BUCKET) * LENGTH_BUCKET
        dynamic = self.cache
        self.cache = _acquire(lm, len(rows), length, dynamic)
        for static, layer in zip(self.cache.layers, dynamic.layers):
            for kept, new in ((static.keys, layer.keys), (static.values, layer.values)):
                kept[:, :, :width] = new
                kept[:, :, width:] = 0  # never attended (masked), but stale values could be NaN
            static.cumulative_length.fill_(width)
        self.mask = torch.cat([self.mask, self.mask.new_zeros(len(rows), length - width)], 1)
        self.column = width

    def feed(self, tokens: torch.Tensor):
        self.mask[:, self.column] = 1
        self.column += 1
        self.positions = self.positions + 1
        step = _compiled_step(self.lm.device)
        with self.lm._running():
            # A CUDA graph's output lives in a buffer that its next replay overwrites: keep a copy.
            self.logits = step(self.lm.model, tokens.to(self.mask.device)[:, None], self.mask, self.positions,
                               self.cache).clone()

    def reorder(self, index: torch.Tensor):
        index = index.to(self.mask.device)
        self.mask, self.positions, self.logits = self.mask[index], self.positions[index], self.logits[index]
        for layer in self.cache.layers:  # in place: a CUDA graph reads the cache where it was captured
            layer.keys.copy_(layer.keys[index])
            layer.values.copy_(layer.values[index])

    def close(self):
        if self.cache is not None:
            keys = self.cache.layers[0].keys  # [rows, heads, length, head dim]
            _pool(self.lm)[_key(keys.shape[0], keys.shape[2], keys)].append(self.cache)
            self.cache = None


def _step(model, tokens, mask, positions, cache):
    return model(input_ids=tokens, attention_mask=mask, position_ids=positions, past_key_values=cache,
                 use_cache=True).logits[:, -1]


def _compiled_step(device: torch.device):
    """The decoding step compiled for this kind of device, once per process (torch.compile keeps one graph per
    model, shape and adapter state, and compiles a new one only when these change)."""
    if device.type not in _COMPILED:
        mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs: one launch per step
        _COMPILED[device.type] = torch.compile(_step, mode=mode, dynamic=False)
    return _COMPILED[device.type]


def _pool(lm: LM) -> dict:
    pools = _POOLS.setdefault(lm.model, {})
    return pools.setdefault(lm.adapter_disabled, {})


def _key(rows: int, length: int, like: torch.Tensor) -> tuple:
    """What makes two static caches of one model interchangeable."""
    return rows, length, like.dtype, like.device


def _acquire(lm: LM, rows: int, length: int, dynamic):
    """A static cache of `rows` × `length` for `lm`: one handed back earlier, or a new one."""
    from transformers import StaticCache

    def sized(t: torch.Tensor) -> torch.Tensor:
        return t.new_empty(rows, t.shape[1], length, t.shape[3])

    free = _pool(lm).setdefault(_key(rows, length, dynamic.layers[0].keys), [])
    if free:
        return free.pop()
    cache = StaticCache(config=lm._causal_lm().config, max_cache_len=length)
    if len(cache.layers) != len(dynamic.layers) or any(layer.is_sliding for layer in cache.layers):
        raise ValueError(f"decoding: compiled needs a model whose every layer attends to the whole sequence; "
                         f"{lm.name} has sliding-window or other layers: use decoding: eager")
    for layer, source in zip(cache.layers, dynamic.layers):
        layer.lazy_initialization(sized(source.keys), sized(source.values))
    return cache
