"""A causal language model seen as a distribution over continuations: exact sampling and exact scoring.

The prior π0, the model π being trained and any proposal q are all `LM`s. Two operations define it:

* `sample` draws continuations by ancestral sampling with the KV cache and returns, for each one, the
  log-probability under the very distribution it was drawn from;
* `log_prob` scores given continuations with one batched forward pass (rows that share a prompt run it once,
  then their continuations on its repeated KV cache, as sampling does).

Both go through `Warp.log_probs`, so a sample re-scored by `log_prob` gets back its sampling log-probability
(up to floating-point noise). A continuation is a list of token ids; it ends with EOS when sampling stopped
there, and the EOS token is scored like any other. A continuation that does not end with EOS is scored as a
prefix, i.e. the probability that sampling begins with it, which is exactly the probability of a sample cut
at `max_new_tokens`. So the distribution over outputs of `sample(..., max_new_tokens=L)` sums to one.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F

from bayeslm import progress
from bayeslm.distributions import head


@dataclass(frozen=True)
class Warp:
    """How logits become the sampling distribution: temperature, then top-k, then top-p (nucleus).

    The defaults (temperature 1, no truncation) leave the model's own distribution untouched. Whatever the
    setting, log-probabilities returned by `LM.sample` and `LM.log_prob` are those of the warped distribution
    actually sampled, so importance weights computed from them stay correct. Truncation is discontinuous: a
    token at the very edge of the top-k/top-p cut can fall on either side when cached decoding and a full
    forward pass differ by rounding, and is then scored -inf.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Normalised log-probabilities (fp32) of the warped distribution over the last axis."""
        logits = logits.float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1.0:
            # Keep the most likely tokens until their mass reaches top_p, and every token tied with the last
            # one kept: the cut depends on probability values only, never on the order of a sort.
            probs = logits.softmax(-1)
            sorted_probs = probs.sort(dim=-1, descending=True).values
            reached = (sorted_probs.cumsum(-1) < self.top_p).sum(-1, keepdim=True).clamp(max=probs.shape[-1] - 1)
            threshold = sorted_probs.gather(-1, reached)
            logits = logits.masked_fill(probs < threshold, float("-inf"))
        return logits.log_softmax(-1)


@dataclass
class Samples:
    """Continuations drawn from an `LM`, grouped by prompt: prompt c owns rows c*n .. c*n+n-1.

    `tokens[i, :length[i]]` is continuation i (EOS included when `ended[i]`); `token_log_probs` is 0 past it.
    `log_prob[i]` is the total log-probability (nats) of continuation i under the distribution sampled.
    """

    prompts: list[str]
    n: int
    tokens: torch.Tensor
    length: torch.Tensor
    token_log_probs: torch.Tensor
    ended: torch.Tensor
    texts: list[str]

    @property
    def log_prob(self) -> torch.Tensor:
        return self.token_log_probs.sum(-1)

    @property
    def sample_prompts(self) -> list[str]:
        """The prompt of each row."""
        return [p for p in self.prompts for _ in range(self.n)]

    @property
    def continuations(self) -> list[list[int]]:
        return [row[:k].tolist() for row, k in zip(self.tokens, self.length.tolist())]

    def __len__(self) -> int:
        return self.tokens.shape[0]


# eager: transformers' dynamic KV cache; compiled: a static cache and one compiled graph per decoding step.
DECODINGS = ("eager", "compiled")


def pad(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads token rows to one length; returns ids and the attention mask (1 on real tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if not r:
            continue
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def distinct(rows: Sequence[Sequence[int]], device) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """The distinct rows, in order of first appearance, and the index of each row among them."""
    index = {r: i for i, r in enumerate(dict.fromkeys(map(tuple, rows)))}
    return list(index), torch.tensor([index[tuple(r)] for r in rows], device=device)


def draw(log_probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row [B] from the distributions exp(log_probs) [B, V], by inverting each row's CDF at one
    uniform. (`torch.multinomial` draws V exponentials per row: 98 ms of every 64-row decoding step of SmolLM2 on
    a 2-core CPU.) The probabilities are exponentiated in (at least) fp32, as exact as the fp32 log-probabilities
    they come from, and summed in fp64, so that the CDF adds no rounding of its own that matters."""
    probs = log_probs.to(torch.promote_types(log_probs.dtype, torch.float32)).exp()
    cdf = probs.cumsum(-1, dtype=torch.float64)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=cdf.device, dtype=cdf.dtype) * total
    # Strictly below the total, so the first token whose CDF exceeds u exists and has p > 0 (a zero-probability
    # token never raises the CDF).
    u = torch.minimum(u, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so padding on either side does not shift positions."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class LM:
    """A Hugging Face causal LM and its tokenizer, as a distribution over continuations of prompts.

    `chat=True` wraps each prompt as a user turn with the tokenizer's chat template, so an instruction-tuned
    model answers it. `warp` sets the distribution sampled and scored (see `Warp`). `batch_size` bounds how
    many sequences go through the model at once.
    """

    def __init__(self, model, tokenizer, *, chat: bool = False, warp: Warp = Warp(), batch_size: int = 64,
                 name: str = "model", autocast: torch.dtype | None = None, decoding: str = "eager"):
        if tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer of {name} has no EOS token: set tokenizer.eos_token before use, "
                             "since sequences are only complete when they end with EOS")
        self.model = model
        self.tokenizer = tokenizer
        self.chat = chat
        self.warp = warp
        self.batch_size = batch_size
        self.name = name
        self.autocast = autocast  # e.g. torch.bfloat16: matrix products in bf16, log-probs still in fp32
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        self.decoding = decoding  # how sampling runs (see bayeslm.distributions.decoding), never what it draws
        self.adapter_disabled = False  # a PEFT model with its adapter switched off is its own prior
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos.update([gen_eos] if isinstance(gen_eos, int) else gen_eos or [])
        self.eos_ids = torch.tensor(sorted(eos), dtype=torch.long)
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.max_length = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None)

    def __repr__(self) -> str:
        return f"LM({self.name!r}, warp={self.warp})"

    def __mul__(self, potential):
        """prior * potential is the target π* ∝ π0·φ (see `bayeslm.modelling.target`)."""
        from bayeslm.modelling.potentials import Potential
        from bayeslm.modelling.target import Target

        return Target(self, potential) if isinstance(potential, Potential) else NotImplemented

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def warped(self, **warp) -> LM:
        """The same model (shared weights) with another sampling distribution, e.g. `lm.warped(temperature=0.7)`."""
        return self._view(warp=replace(self.warp, **warp))

    def without_adapter(self) -> LM:
        """The base model under a PEFT adapter (same weights, adapter off): the prior of a LoRA run."""
        if not hasattr(getattr(self.model, "base_model", None), "disable_adapter_layers"):
            raise ValueError(f"{self.name} has no adapter layers to switch off: without_adapter needs a PEFT model "
                             "with LoRA-style adapters")
        return self._view(adapter_disabled=True, name=f"{self.name} (adapter off)")

    def shares_forward(self, other: LM) -> bool:
        """Whether both run the very same forward pass (a LoRA model and its adapter-off prior share weights,
        not a forward pass)."""
        return (self.model is other.model and self.adapter_disabled == other.adapter_disabled
                and self.chat == other.chat and self.autocast == other.autocast)

    def same_distribution(self, other: LM) -> bool:
        return self.shares_forward(other) and self.warp == other.warp

    def _view(self, **changes) -> LM:
        other = LM.__new__(LM)
        other.__dict__.update(self.__dict__)
        other.__dict__.update(changes)
        return other

    def forward(self, **inputs):
        """One forward pass, with the adapter off and under autocast when this view asks for it."""
        with self._running():
            return self.model(**inputs)

    @contextlib.contextmanager
    def _running(self):
        adapter = _adapter_off(self.model) if self.adapter_disabled else contextlib.nullcontext()
        precision = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
                     else contextlib.nullcontext())
        with adapter, precision:
            yield

    # ----- prompts -------------------------------------------------------------------------------------------

    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt, ready to be continued (chat template applied when `chat`)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not one string: wrap it as [prompt]")
        if not prompts:
            raise ValueError("the list of prompts is empty: give at least one prompt (\"\" for no prompt)")
        encoded = {}
        for p in dict.fromkeys(prompts):  # each distinct prompt once: scoring repeats them per sample
            if self.chat:
                ids = self.tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                                         add_generation_prompt=True, tokenize=True,
                                                         return_dict=True)["input_ids"]
            else:
                ids = self.tokenizer(p, add_special_tokens=True)["input_ids"]
            if not ids:  # an empty prompt is conditioned on the start-of-text token
                start = self.tokenizer.bos_token_id
                ids = [start if start is not None else self.eos_id]
            encoded[p] = list(ids)
        return [encoded[p] for p in prompts]

    def check_fits(self, prompts: Sequence[str], max_new_tokens: int):
        """Raises ValueError, naming the longest prompt, unless every prompt plus `max_new_tokens` new tokens
        fits in the model's context."""
        self._check_fits(self.encode_prompts(prompts), max_new_tokens, prompts)

    def _check_fits(self, prompt_ids: list[list[int]], max_new_tokens: int, prompts: Sequence[str] | None = None):
        if self.max_length is None:
            return
        lengths = [len(p) for p in prompt_ids]
        i = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[i] + max_new_tokens > self.max_length:
            which = f"prompt {i} ({_preview(prompts[i])})" if prompts is not None else "a prompt"
            room = self.max_length - max_new_tokens
            fix = (f"shorten the prompt to at most {room} tokens or lower max_new_tokens" if room > 0
                   else f"lower max_new_tokens below {self.max_length}")
            raise ValueError(f"{which} is {lengths[i]} tokens; with max_new_tokens={max_new_tokens} it exceeds the "
                             f"context of {self.name} ({self.max_length} tokens): {fix}")

    # ----- sampling ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], n: int = 1, max_new_tokens: int = 32, *,
               seed: int | None = None, generator: torch.Generator | None = None) -> Samples:
        """Draws n continuations of each prompt by ancestral sampling from the warped distribution.

        Sampling stops at EOS (which is kept and counted) or after max_new_tokens tokens, EOS included.
        """
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1, got n={n}, max_new_tokens={max_new_tokens}")
        prompt_ids = self.encode_prompts(prompts)
        self._check_fits(prompt_ids, max_new_tokens, prompts)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        rows = [ids for ids in prompt_ids for _ in range(n)]
        tokens = torch.full((len(rows), max_new_tokens), self.pad_id, dtype=torch.long)
        logps = torch.zeros((len(rows), max_new_tokens))
        # One switch of the adapter for the whole call, not one per decoding step (a LoRA prior: 18 ms each).
        with self._running(), progress.bar(len(rows), "sampling", hidden=len(rows) <= self.batch_size) as shown:
            for start in range(0, len(rows), self.batch_size):
                chunk = slice(start, start + self.batch_size)
                tokens[chunk], logps[chunk] = self._sample_batch(rows[chunk], max_new_tokens, generator)
                shown.update(len(rows[chunk]))
        length, ended = self._lengths(tokens)
        texts = self.decode([row[:k] for row, k in zip(tokens.tolist(), length.tolist())])
        return Samples(list(prompts), n, tokens, length, logps, ended, texts)

    def decoder(self, rows: Sequence[Sequence[int]], max_new_tokens: int):
        """A `bayeslm.distributions.decoding` decoder that has run the token rows `rows`, for up to `max_new_tokens` more
        tokens; close it when done."""
        from bayeslm.distributions import decoding

        if self.decoding == "compiled":
            return decoding.StaticDecoder(self, rows, max_new_tokens)
        return decoding.Decoder(self, rows)

    def _sample_batch(self, prompt_rows, max_new_tokens, generator):
        device, batch = self.device, len(prompt_rows)
        eos_ids = self.eos_ids.to(device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens = torch.full((batch, max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        logps = torch.zeros((batch, max_new_tokens), device=device)
        # Asking whether every row has ended waits for the GPU; asked every step, it stops the host from queueing
        # the next step's kernels while the GPU works. On a GPU ask every 8 steps (at most 7 steps of padding).
        check_every = 1 if device.type == "cpu" else 8
        with contextlib.closing(self.decoder(prompt_rows, max_new_tokens)) as decoder:
            for t in range(max_new_tokens):
                log_probs = self.warp.log_probs(decoder.logits)
                token = draw(log_probs, generator)
                token_logp = log_probs.gather(-1, token[:, None]).squeeze(-1)
                tokens[:, t] = torch.where(finished, self.pad_id, token)
                logps[:, t] = torch.where(finished, 0.0, token_logp)
                finished |= torch.isin(token, eos_ids)
                if t + 1 == max_new_tokens or ((t + 1) % check_every == 0 and bool(finished.all())):
                    break
                decoder.feed(tokens[:, t])
        return tokens.cpu(), logps.cpu()

    def _lengths(self, tokens):
        """Length of each sampled continuation (through its first EOS) and whether EOS ended it."""
        is_eos = torch.isin(tokens, self.eos_ids)
        first_eos = torch.where(is_eos.any(-1), is_eos.float().argmax(-1), tokens.shape[1])
        ended = first_eos < tokens.shape[1]
        length = torch.where(ended, first_eos + 1, tokens.shape[1])
        return length, ended

    def decode(self, continuations: Sequence[Sequence[int]]) -> list[str]:
        """Text of each continuation, without its EOS or other special tokens."""
        return self.tokenizer.batch_decode([list(c) for c in continuations], skip_special_tokens=True)

    # ----- scoring -------------------------------------------------------------------------------------------

    def log_prob(self, prompts: Sequence[str], continuations, *, padding_side: str = "left") -> torch.Tensor:
        """Total log-probability (nats, fp32) of each continuation given its prompt, shape [B], on the model's
        device (`Samples` stay on the CPU).

        `continuations` are token-id lists (exact), or strings, which are tokenized and get EOS appended
        (i.e. scored as complete texts). Gradients flow when called outside `torch.no_grad()`.
        """
        return self.token_log_probs(prompts, continuations, padding_side=padding_side).sum(-1)

    def token_log_probs(self, prompts: Sequence[str], continuations, *, padding_side: str = "left"
                        ) -> torch.Tensor:
        """Per-token log-probabilities [B, L] of each continuation, 0 past its end."""
        return self.token_scores(prompts, continuations, padding_side=padding_side)[0]

    def kl(self, other: LM, prompts: Sequence[str], continuations) -> torch.Tensor:
        """Σ_t KL(self(·|x<t) ‖ other(·|x<t)) along each continuation, shape [B], never negative.

        Averaged over continuations sampled from `self`, this is an unbiased, Rao–Blackwellised estimate of
        the sequence-level KL(self ‖ other): at each step the expectation over the next token is exact.
        """
        return self.token_scores(prompts, continuations, kl_to=other)[1].sum(-1)

    def token_scores(self, prompts: Sequence[str], continuations, *, kl_to: LM | None = None,
                     padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token log-probabilities [B, L] and, with `kl_to`, per-token KL(self ‖ kl_to) [B, L].

        One forward pass of each model per chunk of `batch_size` rows; only [B, L] results are kept, so
        memory does not grow with the vocabulary times the number of rows. Gradients flow through self.
        Where the warp is a temperature alone, the scores come from the final hidden states through the output
        head in chunks of positions (`bayeslm.distributions.head`), so not even one chunk's [B, L, V] log-distributions exist.
        """
        return self.token_scores_against(kl_to, prompts, continuations, padding_side=padding_side)[:2]

    def token_scores_against(self, kl_to: LM | None, prompts: Sequence[str], continuations, *,
                             padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor | None,
                                                                   torch.Tensor | None]:
        """`token_scores` and, from the same pass of `kl_to`, its own per-token log-probabilities [B, L] (no
        gradient): what KL-RL needs of the prior, in one forward pass of it."""
        if kl_to is not None:
            self.check_compatible(kl_to)
        chunks = list(self._chunks(prompts, continuations))
        width = max((max((len(c) for c in conts), default=0) for _, conts in chunks), default=0)
        heads = self._fused_heads(kl_to)
        scores = []  # per chunk: (log-probs, KL, the other's log-probs), each [rows, width] or None
        for chunk in chunks:
            if heads is not None:
                parts = self._fused_scores(chunk, padding_side, kl_to, heads)
            else:
                parts = self._unfused_scores(chunk, padding_side, kl_to)
            scores.append([None if x is None else F.pad(x, (0, width - x.shape[1])) for x in parts])
        return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*scores))

    def _unfused_scores(self, chunk, padding_side, kl_to):
        log_dists, targets, valid = self._log_dists(chunk, padding_side)
        zero = torch.zeros((), device=log_dists.device)
        # where() rather than a product: padded positions may hold -inf or NaN.
        lp = torch.where(valid, log_dists.gather(-1, targets[..., None]).squeeze(-1), zero)
        if kl_to is None:
            return lp, None, None
        with torch.no_grad():
            other_dists = kl_to._log_dists(chunk, padding_side)[0]
        other_lp = torch.where(valid, other_dists.gather(-1, targets[..., None]).squeeze(-1), zero)
        vocab = min(log_dists.shape[-1], other_dists.shape[-1])
        log_p, log_q = log_dists[..., :vocab], other_dists[..., :vocab]
        # 0·log 0 = 0: tokens self cannot emit contribute nothing, even where the other gives -inf.
        terms = torch.where(log_p > float("-inf"), log_p.exp() * (log_p - log_q), zero)
        return lp, torch.where(valid, terms.sum(-1).clamp(min=0), zero), other_lp  # clamp: rounding noise

    def _fused_scores(self, chunk, padding_side, kl_to, heads):
        hidden, targets, valid = self._scored_states(chunk, padding_side, hidden=True)
        prior_hidden = None
        if kl_to is not None:
            with torch.no_grad():
                prior_hidden = kl_to._scored_states(chunk, padding_side, hidden=True)[0][valid]
        scores = head.token_scores(hidden[valid], heads[0], targets[valid], prior_hidden, heads[1])
        # Only valid positions were scored: the rest stay 0.
        return tuple(None if x is None else torch.zeros(valid.shape, device=x.device).masked_scatter(valid, x.float())
                     for x in scores)

    def _fused_heads(self, kl_to: LM | None = None) -> tuple[head.Head, head.Head | None] | None:
        """The output heads of self (and of kl_to) when scoring can go through them (`bayeslm.distributions.head`), else None."""
        mine = self._head()
        if kl_to is None or mine is None:
            return (mine, None) if mine is not None else None
        other = kl_to._head()
        if other is None or other.weight.shape[0] != mine.weight.shape[0]:
            return None
        return mine, other

    def _head(self) -> head.Head | None:
        """The output head as a `head.Head`, when the warped logits are exactly the head applied to the decoder's
        final hidden states: a temperature-only warp, a plain linear head, no soft-capping or scaling."""
        model = self._causal_lm()
        output = model.get_output_embeddings()
        if (self.warp.top_k is not None or self.warp.top_p is not None or type(output) is not torch.nn.Linear
                or output.bias is not None or not hasattr(model, "get_decoder")
                or any(getattr(model.config, k, None) is not None for k in _LOGIT_TRANSFORMS)
                or not _head_reproduces_logits(model)):
            return None
        return head.Head(output.weight, self.warp.temperature, self.autocast)

    def _causal_lm(self):
        """The Hugging Face causal LM itself (under a PEFT wrapper, with the adapter's layers in it)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _states(self, hidden: bool, logits_to_keep: int = 0, **inputs):
        """One forward pass, inside `_running`: the decoder's final (normed) hidden states (`hidden`) or the logits,
        where `forward` would have kept logits, and the KV cache when the inputs ask for one."""
        if hidden:
            out = self._causal_lm().get_decoder()(**inputs)
            return out.last_hidden_state[:, -logits_to_keep:], out.past_key_values
        out = self.model(**inputs, logits_to_keep=logits_to_keep)
        return out.logits, out.past_key_values

    def _caches(self) -> bool:
        """Whether a forward pass keeps its KV cache: transformers drops it in layers that recompute their
        activations (gradient checkpointing, in training mode)."""
        return not (self.model.training and any(getattr(m, "gradient_checkpointing", False)
                                                for m in self.model.modules()))

    def check_compatible(self, other: LM):
        """Two LMs can score each other's samples only with one vocabulary and one prompt format."""
        if self.tokenizer.get_vocab() != other.tokenizer.get_vocab():
            raise ValueError(f"{self.name} and {other.name} use different tokenizers; scoring one's token ids under "
                             "the other needs one vocabulary")
        if self.chat != other.chat:
            raise ValueError(f"{self.name} has chat={self.chat} but {other.name} has chat={other.chat}: both must "
                             "format prompts the same way")

    def _chunks(self, prompts, continuations):
        if len(prompts) != len(continuations):
            raise ValueError(f"got {len(prompts)} prompts for {len(continuations)} continuations: pass one prompt "
                             "per continuation")
        conts = [self._as_ids(c) for c in continuations]
        prompt_ids = self.encode_prompts(list(prompts))
        longest = max(len(p) + len(c) for p, c in zip(prompt_ids, conts))
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(f"a prompt plus continuation of {longest} tokens exceeds the context of {self.name} "
                             f"({self.max_length} tokens): shorten the prompt or the continuation")
        for start in range(0, len(conts), self.batch_size):
            end = start + self.batch_size
            yield prompt_ids[start:end], conts[start:end]

    def _as_ids(self, continuation) -> list[int]:
        if isinstance(continuation, str):
            return self.tokenizer(continuation, add_special_tokens=False)["input_ids"] + [self.eos_id]
        if isinstance(continuation, torch.Tensor):
            return continuation.tolist()
        return list(continuation)

    def _log_dists(self, chunk, padding_side):
        """Warped next-token log-distributions along each continuation.

        Returns log_dists [B, L, V] (position j predicts continuation token j), targets [B, L] and valid [B, L].
        """
        logits, targets, valid = self._scored_states(chunk, padding_side, hidden=False)
        return self.warp.log_probs(logits), targets, valid

    def _scored_states(self, chunk, padding_side, hidden: bool):
        """The final hidden states (`hidden`) or the logits at the positions that predict each continuation token:
        states [B, L, ·] (position j predicts continuation token j), targets [B, L] and valid [B, L].

        Rows that share a prompt (a prompt's n samples) run it once when the model keeps a KV cache
        (`_shared_prompt_states`); otherwise each row runs prompt and continuation, padded on `padding_side`."""
        prompt_ids, conts = chunk
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        device = self.device
        width = max(max(len(c) for c in conts), 1)
        cont_len = torch.tensor([len(c) for c in conts], device=device)
        steps = torch.arange(width, device=device)
        targets = pad([c or [self.pad_id] for c in conts], self.pad_id, "right")[0]
        targets = F.pad(targets, (0, width - targets.shape[1]), value=self.pad_id).to(device)
        valid = steps[None, :] < cont_len[:, None]
        prompts, which = distinct(prompt_ids, device)
        if len(prompts) < len(prompt_ids) and self._caches():
            with self._running():
                return self._shared_prompt_states(prompts, which, conts, width, hidden), targets, valid
        ids, mask = pad([p + c for p, c in zip(prompt_ids, conts)], self.pad_id, padding_side)
        ids, mask = ids.to(device), mask.to(device)
        # Left padding ends every continuation at the last column, so only the last `keep` states are needed;
        # kept column keep-1-len+j predicts token j (the final column predicts past the end). 0 keeps every column.
        keep = min(width + 1, ids.shape[1]) if padding_side == "left" else 0
        with self._running():
            states = self._states(hidden, input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                                  logits_to_keep=keep, use_cache=False)[0]
        first = (keep - 1 - cont_len if padding_side == "left"
                 else torch.tensor([len(p) - 1 for p in prompt_ids], device=device))
        cols = (first[:, None] + steps[None, :]).clamp(max=states.shape[1] - 1)
        return states[torch.arange(len(conts), device=device)[:, None], cols], targets, valid

    def _shared_prompt_states(self, prompts, which, conts, width, hidden):
        """`_scored_states` running each distinct prompt once (`prompts`; row i has `prompts[which[i]]`): its last
        state predicts every sample's first token, its KV cache is repeated for every sample, and the continuations
        (right-padded) run on it. With n samples per prompt of P tokens and continuations of L, the pass costs
        P + n·L positions per prompt instead of n·(P + L); gradients flow through the repeated cache back to the
        prompt's single pass."""
        device = self.device
        ids, mask = pad(prompts, self.pad_id, "left")
        ids, mask = ids.to(device), mask.to(device)
        last, cache = self._states(hidden, input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                                   logits_to_keep=1, use_cache=True)
        first = last[:, -1][which, None]  # predicts token 0
        if width == 1:
            return first
        cache.reorder_cache(which)
        # Token j (j < L-1) predicts token j+1; a continuation's last token predicts nothing.
        cont_ids, cont_mask = pad([c[:-1] for c in conts], self.pad_id, "right")  # width - 1 columns
        mask = torch.cat([mask[which], cont_mask.to(device)], 1)
        rest = self._states(hidden, input_ids=cont_ids.to(device), attention_mask=mask,
                            position_ids=positions(mask)[:, ids.shape[1]:], past_key_values=cache, use_cache=True)[0]
        return torch.cat([first, rest], 1)


@contextlib.contextmanager
def _adapter_off(model):
    """A PEFT model with its adapter layers switched off: PEFT's own `disable_adapter()` without the scan of the
    model's status it starts with (50 ms per call for SmolLM2 under LoRA, paid at every scoring pass of the prior).
    Re-entrant: inside an enclosing switch it does nothing, and the enclosing one switches the adapter back on."""
    if model in _SWITCHED_OFF:
        yield
        return
    tuner = model.base_model
    tuner.disable_adapter_layers()
    _SWITCHED_OFF.add(model)
    try:
        yield
    finally:
        _SWITCHED_OFF.discard(model)
        tuner.enable_adapter_layers()


_SWITCHED_OFF: weakref.WeakSet = weakref.WeakSet()  # models whose adapter an enclosing `_adapter_off` holds off


# Config fields of models that transform the head's output (Gemma 2's soft-capping, Cohere's and Granite's scaling).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
_HEAD_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _head_reproduces_logits(model) -> bool:
    """Whether the output head applied to the decoder's final hidden states gives the model's own logits, checked
    once per model on a few tokens: a model may transform its logits in a way that no config field announces."""
    if model not in _HEAD_CHECKED:
        device = next(model.parameters()).device
        ids = torch.arange(min(8, model.get_output_embeddings().weight.shape[0]), device=device)[None]
        training = model.training
        model.eval()  # the same dropout-free pass both ways
        try:
            with torch.no_grad():
                logits = model(input_ids=ids).logits
                through_head = model.get_output_embeddings()(model.get_decoder()(input_ids=ids).last_hidden_state)
        finally:
            model.train(training)
        _HEAD_CHECKED[model] = torch.allclose(logits, through_head, rtol=1e-4, atol=1e-4)
    return _HEAD_CHECKED[model]


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "…")
