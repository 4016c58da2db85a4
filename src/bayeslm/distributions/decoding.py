"""Running an LM token by token over a batch of token rows, keeping its KV cache: the engine under `LM.sample`
and SMC.

Two decoders give the same distributions (the same tokens from the same seed, up to floating-point rounding):

* `Decoder` (`decoding: eager`) grows transformers' dynamic cache by one column per token;
* `StaticDecoder` (`decoding: compiled`) writes into a cache allocated once for the whole continuation and runs
  each step as one compiled graph (`torch.compile`; on a GPU captured as a CUDA graph, "reduce-overhead"). A
  decoding step of a 135 M–1 B model at 64 rows is bound by kernel launches on a GPU, not by FLOPs
  (docs/performance.md, gpu.py), and a captured graph launches once per step. Each new shape (rows rounded up to a
  power of two; the prompt width plus the new tokens rounded up to `LENGTH_BUCKET`) compiles once, tens of
  seconds, and its cache stays allocated for the next batch while the model lives. On a CPU compiled decoding
  ran at 0.87–0.94× eager (docs/performance.md, overhead.py), so eager stays the default.

Both take left-padded prompts, so that every row's next token goes in the same column; a prompt's n samples
share its pass and then copies of its cache.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Sequence

import torch
from transformers import Cache, DynamicLayer, StaticLayer

from bayeslm.distributions import masking
from bayeslm.distributions.runnable import Runnable
from bayeslm.distributions.tokens import distinct, draw, pad, positions

# Cache lengths are rounded up to a multiple of this, so that prompts of nearby lengths share one compiled graph.
LENGTH_BUCKET = 64
# Static caches that finished decoders handed back, per model and shape: a CUDA graph reads its cache at fixed
# addresses, so a new cache for every batch would be captured again every batch.
_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_COMPILED: dict[str, Callable] = {}  # the compiled decoding step, per device type


def ancestral(lm: Runnable, prompt_rows: Sequence[Sequence[int]], max_new_tokens: int, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestral sampling of one continuation per token row, from the LM's warped distribution: tokens [B, L] (pad
    after EOS) and their log-probabilities [B, L] (0 after EOS), on the CPU. Sampling stops at EOS, which is kept
    and counted, or after max_new_tokens tokens."""
    device, batch = lm.device, len(prompt_rows)
    eos_ids = lm.eos_ids.to(device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens = torch.full((batch, max_new_tokens), lm.pad_id, dtype=torch.long, device=device)
    logps = torch.zeros((batch, max_new_tokens), device=device)
    # Asking whether every row has ended waits for the GPU; asked every step, it stops the host from queueing
    # the next step's kernels while the GPU works. On a GPU ask every 8 steps (at most 7 steps of padding).
    check_every = 1 if device.type == "cpu" else 8
    masks = masking.Masks(lm.languages, batch) if lm.languages else None
    with contextlib.closing(decoder(lm, prompt_rows, max_new_tokens)) as run:
        for t in range(max_new_tokens):
            _, token, token_logp = next_token(lm, run, masks, generator)
            tokens[:, t] = torch.where(finished, lm.pad_id, token)
            logps[:, t] = torch.where(finished, 0.0, token_logp)
            if masks is not None:
                masks.advance(token.cpu(), (~finished).cpu())
            finished |= torch.isin(token, eos_ids)
            if t + 1 == max_new_tokens or ((t + 1) % check_every == 0 and bool(finished.all())):
                break
            run.feed(tokens[:, t])
    return tokens.cpu(), logps.cpu()


def next_token(lm: Runnable, decoder, masks, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of ancestral decoding, shared by `ancestral` and SMC: the LM's warped next-token log-probabilities
    [B, V] (masked to its languages where `masks` is given), a token drawn from them for each row [B], and its
    log-probability [B]."""
    log_probs = lm.warp.log_probs(decoder.logits)
    if masks is not None:
        log_probs = masks.apply(log_probs)
    token = draw(log_probs, generator)
    return log_probs, token, log_probs.gather(-1, token[:, None]).squeeze(-1)


def decoder(lm: Runnable, rows: Sequence[Sequence[int]], max_new_tokens: int) -> Decoder:
    """A decoder of the kind `lm.decoding` names that has run the token rows `rows`, for up to `max_new_tokens`
    more tokens; close it when done."""
    if lm.decoding == "compiled":
        return StaticDecoder(lm, rows, max_new_tokens)
    return Decoder(lm, rows)


def lengths(tokens: torch.Tensor, eos_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Length of each sampled continuation (through its first EOS) and whether EOS ended it."""
    is_eos = torch.isin(tokens, eos_ids)
    first_eos = torch.where(is_eos.any(-1), is_eos.float().argmax(-1), tokens.shape[1])
    ended = first_eos < tokens.shape[1]
    return torch.where(ended, first_eos + 1, tokens.shape[1]), ended


class Decoder:
    """`logits` [B, V] predict each row's next token; `feed` appends one token to every row."""

    def __init__(self, lm: Runnable, rows: Sequence[Sequence[int]]):
        prompts, which = distinct(rows, lm.device)
        ids, mask = pad(prompts, lm.pad_id, "left")
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        out = lm.forward(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True,
                         logits_to_keep=1)
        self.lm, self.mask, self.logits, self.cache = lm, mask[which], out.logits[which, -1], out.cache
        self.positions = positions(self.mask)[:, -1:]
        if len(prompts) < len(rows):
            self.cache.reorder_cache(which)

    def feed(self, tokens: torch.Tensor):
        """Appends one token [B] to every row."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], 1)
        self.positions = self.positions + 1
        out = self.lm.forward(input_ids=tokens.to(self.mask.device)[:, None], attention_mask=self.mask,
                              position_ids=self.positions, cache=self.cache, use_cache=True)
        self.logits, self.cache = out.logits[:, -1], out.cache

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
    step t switches on column `width + t`, so every step has the same shapes. The rows are padded to a power of
    two with copies of the last row (whose prompt has already run: no extra prefill), so that ragged batches
    share a few graphs; `logits`, `feed` and `reorder` see only the real rows."""

    @torch.no_grad()  # a pooled cache must not carry autograd history into the next batch
    def __init__(self, lm: Runnable, rows: Sequence[Sequence[int]], max_new_tokens: int):
        self.rows = len(rows)
        padded = 1 << (self.rows - 1).bit_length()
        super().__init__(lm, list(rows) + [rows[-1]] * (padded - self.rows))
        width = self.mask.shape[1]
        length = -(-(width + max_new_tokens) // LENGTH_BUCKET) * LENGTH_BUCKET
        prefill = self.cache
        if any(type(layer) is not DynamicLayer for layer in prefill.layers):
            raise ValueError(f"decoding: compiled needs a model whose every layer attends to the whole sequence; "
                             f"{lm.name} has sliding-window or other layers: use decoding: eager")
        self.key = (lm.adapter_disabled, padded, length, prefill.layers[0].keys.dtype, lm.device)
        free = _POOLS.setdefault(lm.model, {}).setdefault(self.key, [])
        self.cache = free.pop() if free else Cache(layers=[_StaticLayer(max_cache_len=length) for _ in prefill.layers])
        for static_layer, prefill_layer in zip(self.cache.layers, prefill.layers):
            if not static_layer.is_initialized:
                static_layer.lazy_initialization(prefill_layer.keys, prefill_layer.values)
            for kept, new in ((static_layer.keys, prefill_layer.keys), (static_layer.values, prefill_layer.values)):
                kept[:, :, :width] = new
                kept[:, :, width:] = 0  # never attended (masked), but stale values could be NaN
            static_layer.cumulative_length.fill_(width)
        self.mask = torch.cat([self.mask, self.mask.new_zeros(padded, length - width)], 1)
        self.column = width
        # The step's token input: one buffer, so that every step passes a tensor of the same strides (a view of the
        # sampler's [rows, max_new_tokens] tokens would have a stride that differs with max_new_tokens: a recompile).
        self.token = torch.zeros(padded, 1, dtype=torch.long, device=lm.device)
        self.all_logits, self.logits = self.logits, self.logits[:self.rows]
        self.step = _compiled_step(lm.device)

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor):
        self.token[:self.rows, 0] = tokens
        self.mask[:, self.column] = 1
        self.column += 1
        self.positions = self.positions + 1
        with self.lm.running():
            try:
                logits = self.step(self.lm.model, self.token, self.mask, self.positions, self.cache)
            except torch._dynamo.exc.TorchDynamoException as error:  # torch.compile could not capture this model
                what = " ".join([line.strip() for line in str(error).splitlines() if line.strip()][:2])[:300]
                raise ValueError(f"decoding: compiled could not compile the decoding step of {self.lm.name} "
                                 f"({type(error).__name__}: {what}); use decoding: eager") from error
        # A CUDA graph's output lives in a buffer that its next replay overwrites: keep a copy.
        self.all_logits = logits.clone() if logits.device.type == "cuda" else logits
        self.logits = self.all_logits[:self.rows]

    @torch.no_grad()
    def reorder(self, index: torch.Tensor):
        index = index.to(self.mask.device)
        index = torch.cat([index, torch.arange(self.rows, len(self.mask), device=index.device)])  # padding stays
        self.mask, self.positions = self.mask[index], self.positions[index]
        self.all_logits = self.all_logits[index]
        self.logits = self.all_logits[:self.rows]
        for layer in self.cache.layers:  # in place: a CUDA graph reads the cache where it was captured
            layer.keys.copy_(layer.keys[index])
            layer.values.copy_(layer.values[index])

    def close(self):
        """Hands the cache back for the next batch of this shape (a decoder left open only costs that batch a
        new cache, and on a GPU a new capture)."""
        if self.cache is not None:
            _POOLS[self.lm.model][self.key].append(self.cache)
            self.cache = None


class _StaticLayer(StaticLayer):
    """transformers' static cache layer, storing keys and values in the dtype of the prompts' cache. Under bf16
    autocast a rotary model's keys come out fp32 (the rotation is fp32) and its values bf16; the dynamic cache
    keeps both in fp32 (concatenation promotes), where transformers' static layer would fail to copy bf16 values
    into its fp32 values."""

    def update(self, key_states, value_states, *args, **kwargs):
        return super().update(key_states.to(self.keys.dtype), value_states.to(self.values.dtype), *args, **kwargs)


def _step(model, tokens, mask, positions, cache):
    return model(input_ids=tokens, attention_mask=mask, position_ids=positions, cache=cache,
                 use_cache=True).logits[:, -1]


def _compiled_step(device: torch.device):
    """The decoding step compiled for this kind of device, once per process. torch.compile keeps one graph per
    shape (rows, cache length), adapter state and autocast, shared by models of one architecture, and compiles a
    new one only when these change, up to torch's recompile limit (`torch._dynamo.config.recompile_limit`, 8 by
    default), past which new shapes run uncompiled."""
    if device.type not in _COMPILED:
        mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs: one launch per step
        _COMPILED[device.type] = torch.compile(_step, mode=mode, dynamic=False)
    return _COMPILED[device.type]
