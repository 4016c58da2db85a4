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

from bayeslm import progress
from bayeslm.distributions import decoding, scoring
from bayeslm.distributions.warp import Warp


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


class LM:
    """A Hugging Face causal LM and its tokenizer, as a distribution over continuations of prompts.

    `chat=True` wraps each prompt as a user turn with the tokenizer's chat template, so an instruction-tuned
    model answers it; `system` is the system message put before it (None: whatever the template does without
    one, which for some models is a default system prompt of their own; `render` shows the text the model sees).
    `warp` sets the distribution sampled and scored (see `Warp`). `batch_size` bounds how many sequences go through
    the model at once.
    """

    def __init__(self, model, tokenizer, *, chat: bool = False, system: str | None = None, warp: Warp = Warp(),
                 batch_size: int = 64, name: str = "model", autocast: torch.dtype | None = None,
                 decoding: str = "eager"):
        if tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer of {name} has no EOS token: set tokenizer.eos_token before use, "
                             "since sequences are only complete when they end with EOS")
        self.model = model
        self.tokenizer = tokenizer
        if system is not None and not chat:
            raise ValueError("a system message needs the chat template: give chat=True with system")
        self.chat = chat
        self.system = system
        self.warp = warp
        self.batch_size = batch_size
        self.name = name
        self.autocast = autocast  # e.g. torch.bfloat16: matrix products in bf16, log-probs still in fp32
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        self.decoding = decoding  # how sampling runs (see bayeslm.distributions.decoding), never what it draws
        self.adapter_disabled = False  # a PEFT model with its adapter switched off is its own prior
        self.languages = ()  # masked to these languages' viable tokens (`masked`; `bayeslm.distributions.masking`)
        self.source = None  # what `load_lm` loads it from again (None: built in code)
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

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def warped(self, **warp) -> LM:
        """The same model (shared weights) with another sampling distribution, e.g. `lm.warped(temperature=0.7)`."""
        return self.view(warp=replace(self.warp, **warp))

    def without_adapter(self) -> LM:
        """The base model under a PEFT adapter (same weights, adapter off): the prior of a LoRA run."""
        if not hasattr(getattr(self.model, "base_model", None), "disable_adapter_layers"):
            raise ValueError(f"{self.name} has no adapter layers to switch off: without_adapter needs a PEFT model "
                             "with LoRA-style adapters")
        return self.view(adapter_disabled=True, name=f"{self.name} (adapter off)")

    def shares_forward(self, other: LM) -> bool:
        """Whether both run the very same forward pass (a LoRA model and its adapter-off prior share weights,
        not a forward pass)."""
        return (self.model is other.model and self.adapter_disabled == other.adapter_disabled
                and self.chat == other.chat and self.system == other.system and self.autocast == other.autocast)

    def same_distribution(self, other: LM) -> bool:
        return self.shares_forward(other) and self.warp == other.warp and self.languages == other.languages

    def masked(self, languages) -> LM:
        """The same model sampling only tokens that keep its continuation viable in every one of `languages`,
        renormalised (locally constrained decoding, with exact log-probabilities: `bayeslm.distributions.masking`)."""
        languages = tuple(languages)
        if not languages:
            raise ValueError("masked needs at least one language (a regex, grammar or json_schema potential's)")
        return self.view(languages=self.languages + languages, name=f"{self.name} masked")

    def view(self, **changes) -> LM:
        """The same model (shared weights) with other settings: `lm.view(decoding="compiled")`."""
        other = LM.__new__(LM)
        other.__dict__.update(self.__dict__)
        other.__dict__.update(changes)
        return other

    def forward(self, **inputs):
        """One forward pass, with the adapter off and under autocast when this view asks for it."""
        with self.running():
            return self.model(**inputs)

    @contextlib.contextmanager
    def running(self):
        """The context in which this view's model runs: its adapter off (a LoRA prior), under its autocast."""
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
            self._check_prompt(p)
            if self.chat:
                system = [{"role": "system", "content": self.system}] if self.system is not None else []
                ids = self.tokenizer.apply_chat_template([*system, {"role": "user", "content": p}],
                                                         add_generation_prompt=True, tokenize=True,
                                                         return_dict=True)["input_ids"]
            else:
                ids = self.tokenizer(p, add_special_tokens=True)["input_ids"]
            if not ids:  # an empty prompt is conditioned on the start-of-text token
                start = self.tokenizer.bos_token_id
                ids = [start if start is not None else self.eos_id]
            encoded[p] = list(ids)
        return [encoded[p] for p in prompts]

    @property
    def chat_spec(self) -> bool | dict:
        """This LM's prompt format as `load_lm`'s `chat` takes it: load another model with it to compare the two."""
        return {"system": self.system} if self.system is not None else self.chat

    def render(self, prompts: Sequence[str]) -> list[str]:
        """The text the model sees for each prompt: the chat template applied, special tokens included."""
        return [self.tokenizer.decode(ids) for ids in self.encode_prompts(prompts)]

    def _check_prompt(self, prompt: str):
        """Refuses a prompt that the tokenizer would silently change: a special token written as text (an EOS string
        ends the turn early) or words the vocabulary lacks (a toy tokenizer maps them to EOS)."""
        if not isinstance(prompt, str):
            raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}: {prompt!r}")
        special = [s for s in self.tokenizer.all_special_tokens if s and s in prompt]
        if special:
            raise ValueError(f"the prompt {_preview(prompt)} contains {special[0]!r}, a special token of {self.name} "
                             "that would end the text or the turn early; remove it from the prompt")
        unk = self.tokenizer.unk_token_id
        if unk is not None and unk in self.tokenizer(prompt, add_special_tokens=False)["input_ids"]:
            unknown = [w for w in prompt.split() if unk in self.tokenizer(w, add_special_tokens=False)["input_ids"]]
            raise ValueError(f"the prompt {_preview(prompt)} has words outside the vocabulary of {self.name}: "
                             f"{unknown}; use words it knows")

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
        # One switch of the adapter for the whole call, not one per decoding step (each costs a LoRA prior a pass
        # over its modules).
        with self.running(), progress.bar(len(rows), "sampling", hidden=len(rows) <= self.batch_size) as shown:
            for start in range(0, len(rows), self.batch_size):
                chunk = slice(start, start + self.batch_size)
                tokens[chunk], logps[chunk] = decoding.ancestral(self, rows[chunk], max_new_tokens, generator)
                shown.update(len(rows[chunk]))
        length, ended = decoding.lengths(tokens, self.eos_ids)
        texts = self.decode([row[:k] for row, k in zip(tokens.tolist(), length.tolist())])
        return Samples(list(prompts), n, tokens, length, logps, ended, texts)

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
                     padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Per-token log-probabilities [B, L] and, with `kl_to`, per-token KL(self ‖ kl_to) [B, L] and kl_to's own
        per-token log-probabilities [B, L] from the same pass (see `bayeslm.distributions.scoring`). Gradients
        flow through self."""
        if len(prompts) != len(continuations):
            raise ValueError(f"got {len(prompts)} prompts for {len(continuations)} continuations: pass one prompt "
                             "per continuation")
        if kl_to is not None:
            self.check_compatible(kl_to)
        conts = [self._continuation_ids(c) for c in continuations]
        prompt_ids = self.encode_prompts(list(prompts))
        longest = max(len(p) + len(c) for p, c in zip(prompt_ids, conts))
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(f"a prompt plus continuation of {longest} tokens exceeds the context of {self.name} "
                             f"({self.max_length} tokens): shorten the prompt or the continuation")
        return scoring.token_scores(self, kl_to, prompt_ids, conts, padding_side=padding_side)

    def _continuation_ids(self, continuation) -> list[int]:
        """Token ids of a continuation given as ids, or as text (tokenized, EOS appended: a complete text)."""
        if isinstance(continuation, str):
            return self.tokenizer(continuation, add_special_tokens=False)["input_ids"] + [self.eos_id]
        if isinstance(continuation, torch.Tensor):
            return continuation.tolist()
        return list(continuation)

    def check_compatible(self, other: LM):
        """Two LMs can score each other's samples only with one vocabulary and one prompt format."""
        if self.tokenizer.get_vocab() != other.tokenizer.get_vocab():
            raise ValueError(f"{self.name} and {other.name} use different tokenizers; scoring one's token ids under "
                             "the other needs one vocabulary")
        if (self.chat, self.system) != (other.chat, other.system):
            raise ValueError(f"{self.name} has chat={self.chat}, system={self.system!r} but {other.name} has "
                             f"chat={other.chat}, system={other.system!r}: both must format prompts the same way")

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


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "…")
