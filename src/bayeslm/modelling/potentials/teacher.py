"""φ(x|c) = (π_T(x|c) / π0(x|c))^γ: another language model, a teacher π_T, as evidence.

The target π* ∝ π0^(1−γ)·π_T^γ is a geometric bridge from the prior (γ = 0) to the teacher (γ = 1, where π* is
the teacher itself, Z = 1). KL-RL towards it with γ = 1 is on-policy distillation (the student samples, the
teacher scores; TRL's DistillationTrainer), here with the teacher's per-token log-ratio to the prior as the dense
reward and bayeslm's exact per-token KL to the prior as the dense penalty;
0 < γ < 1 asks for a model between the two, measured against that target like any other.

The teacher must share the prior's tokenizer (the ratio is of the same token sequences) and its prompt format.
Scoring costs a forward pass of the teacher and one of the prior over each batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from bayeslm.config import ConfigError, field, positive, validate
from bayeslm.modelling.potentials.base import POTENTIALS, Potential


@POTENTIALS.register
@dataclass
class Teacher:
    """A teacher model as evidence: φ = (π_T/π0)^γ, the target π* ∝ π0^(1−γ)·π_T^γ (γ = 1: the teacher)."""

    name: ClassVar[str] = "teacher"
    model: Any = field(doc="the teacher: a local model directory, 'default', or {toy: {...}}, sharing the prior's "
                           "tokenizer", kind="a model")
    weight: float = field(1.0, doc="γ: how far from the prior towards the teacher (1: the teacher itself)",
                          check=positive)

    def __post_init__(self):
        validate(self)

    def build(self, prior, prompts=None, max_new_tokens=None) -> TeacherOf:
        from bayeslm.distributions.loading import load_lm

        return TeacherOf(prior, load_lm(self.model, chat=prior.chat_spec, device=str(prior.device)), self.weight)


class TeacherOf(Potential):
    """φ = (π_T/π0)^γ for one prior and teacher; its statistic is log π_T(x|c) − log π0(x|c)."""

    reads_tokens = True

    def __init__(self, prior, teacher, weight: float = 1.0):
        if prior.model.config.vocab_size != teacher.model.config.vocab_size or (
                prior.tokenizer.get_vocab() != teacher.tokenizer.get_vocab()):
            raise ConfigError(f"teacher: {teacher.name} does not share the tokenizer of the prior {prior.name}; the "
                              "ratio π_T/π0 needs the same token sequences under both")
        if not weight > 0:
            raise ValueError(f"teacher: weight must be > 0, got {weight}")
        self.prior, self.teacher, self.weight = prior, teacher, float(weight)

    def __repr__(self) -> str:
        return f"Teacher({self.teacher.name}, weight={self.weight:g})"

    @property
    def names(self):
        return ["log_teacher_ratio"]

    def statistics(self, texts: Sequence[str], prompts: Sequence[str], tokens) -> dict:
        prompts, tokens = list(prompts), [list(t) for t in tokens]
        with torch.no_grad():
            ratio = (self.teacher.log_prob(prompts, tokens).double().cpu()
                     - self.prior.log_prob(prompts, tokens).double().cpu())
        return {"log_teacher_ratio": ratio}

    def log_phi(self, stats) -> torch.Tensor:
        return self.weight * stats["log_teacher_ratio"]

    def token_log_phi(self, prompts, continuations, prior_token_log_probs):
        """γ·(log π_T − log π0)(x_t|x<t) at each token: KL-RL's dense reward towards the bridge (at γ = 1, the
        per-token signal of on-policy distillation)."""
        with torch.no_grad():
            teacher = self.teacher.token_log_probs(list(prompts), continuations).to(prior_token_log_probs.device)
        return self.weight * (teacher.float() - prior_token_log_probs.float())


def teacher(prior, model, weight: float = 1.0) -> TeacherOf:
    """`prior * teacher(prior, teacher_lm, γ)`: the target π* ∝ π0^(1−γ)·π_T^γ."""
    return TeacherOf(prior, model, weight)
