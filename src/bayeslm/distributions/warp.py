"""How logits become the distribution sampled and scored: temperature, top-k, top-p."""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_TEMPERATURE = 1e-6  # logits of order 100 divided by it stay far inside float32's range (3.4e38)


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
        if not self.temperature >= MIN_TEMPERATURE:
            raise ValueError(f"temperature must be at least {MIN_TEMPERATURE:g} (below it the logits divided by it "
                             f"overflow float32), got {self.temperature}; for greedy decoding set top_k: 1")
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
