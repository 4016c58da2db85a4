"""Exact ground truth on priors small enough to enumerate every continuation.

The space of continuations with at most L tokens is every sequence of k < L non-EOS tokens followed by an EOS
token (any of the model's EOS ids), plus every sequence of L non-EOS tokens (cut at the limit). `LM.log_prob`
gives each its exact probability under the sampler, so π0 sums to one, and log Z, π* and every scorecard
figure for any model q follow by summation: these are the values the Monte Carlo estimates of
`bayeslm.measurement.scorecard` are tested against.
"""

from __future__ import annotations

from typing import Sequence

import torch

from bayeslm.distributions.enumeration import continuations
from bayeslm.distributions.lm import LM
from bayeslm.measurement.pass_at_k import exact_pass_at_k, verdicts
from bayeslm.modelling.potentials.base import statistics_of
from bayeslm.modelling.rewards import Reward
from bayeslm.modelling.target import Target


class Exact:
    """Enumerates the target's space once: exact π0, log Z(c) and π*(·|c) for every prompt c."""

    def __init__(self, target: Target):
        self.target = target
        prior = target.prior
        self.sequences = continuations(prior.model.config.vocab_size, prior.eos_ids.tolist(), target.max_new_tokens)
        self.texts = prior.decode(self.sequences)
        self.log_prior = self.log_probs(prior)  # [C, S]
        total = torch.logsumexp(self.log_prior, 1)
        if (total.abs() > 1e-5).any():
            raise ValueError(f"the enumerated prior sums to {total.exp().tolist()} instead of 1: the model's "
                             "vocabulary or EOS handling does not match its tokenizer")
        self.stats = {}
        log_phi = []
        for prompt in target.prompts:
            stats = statistics_of(target.potential, self.texts, [prompt] * len(self.texts), self.sequences)
            log_phi.append(target.potential.log_phi(stats))
            for name, value in stats.items():
                self.stats.setdefault(name, []).append(value)
        self.stats = {name: torch.stack(v) for name, v in self.stats.items()}
        # log φ is shifted by its largest value before log π0 is added: at a tiny β, log φ = r/β is so large that
        # log π0 would vanish beside it in floating point (π* would lose its prior), and every KL with it.
        log_phi = self.log_phi = torch.stack(log_phi).double()
        largest = log_phi.max(1).values
        self.shift = torch.where(torch.isfinite(largest), largest, torch.zeros(()).double())  # [C]
        self.log_target_shifted = self.log_prior + (log_phi - self.shift[:, None])  # unnormalised, shifted
        self.log_z_shifted = torch.logsumexp(self.log_target_shifted, 1)  # [C]
        self.log_target = self.log_target_shifted + self.shift[:, None]  # unnormalised
        self.log_z = self.log_z_shifted + self.shift
        self.log_posterior = self.log_target_shifted - self.log_z_shifted[:, None]

    @torch.no_grad()
    def log_probs(self, model: LM) -> torch.Tensor:
        """log q(x|c) of every enumerated continuation, [C, S] in float64."""
        rows = [model.log_prob([p] * len(self.sequences), self.sequences).double().cpu()
                for p in self.target.prompts]
        return torch.stack(rows)

    def scorecard(self, model: LM, *, verifier: Reward | None = None, ks: Sequence[int] = ()) -> dict[str, float]:
        """Exact values, under the scorecard's names, for `model` q against the target (means over prompts); with
        `ks`, pass@k for each k, judged as the scorecard judges (`bayeslm.measurement.pass_at_k.verdicts`)."""
        log_q = self.log_probs(model)
        q, post = log_q.exp(), self.log_posterior.exp()

        def expect(p, values):  # Σ_x p(x) values(x), with 0·anything = 0
            return torch.where(p > 0, p * values, torch.zeros(()).double()).sum(1).mean().item()

        log_w = self.log_target - log_q
        shifted = self.log_target_shifted - log_q  # log w − shift: the KLs from it lose nothing at a tiny β
        exact = {
            "log_z": self.log_z.mean().item(),
            "elbo": expect(q, log_w),
            "eubo": expect(post, log_w),
            "tv_model_target": 0.5 * (q - post).abs().sum(1).mean().item(),
            "kl_model_prior": expect(q, log_q - self.log_prior),
            "kl_model_prior_sampled": expect(q, log_q - self.log_prior),
            "entropy": expect(q, -log_q),
        }
        exact["log_z_model"] = exact["log_z"]  # what q's own log Ẑ estimates (it falls short where q misses mass)
        exact["kl_model_target"] = self.log_z_shifted.mean().item() - expect(q, shifted)
        exact["kl_target_model"] = expect(post, shifted) - self.log_z_shifted.mean().item()
        reward = self.stats[self.target.reward_name]
        exact["reward_mean"] = expect(q, reward)
        exact["target_reward_mean"] = expect(post, reward)
        exact["statistics"] = {name: {"model": expect(q, v), "target": expect(post, v)}
                               for name, v in self.stats.items()}
        if ks:
            correct = self.correct(verifier)
            if correct is not None:
                exact["pass_at_k"] = exact_pass_at_k(torch.where(correct, q, torch.zeros(()).double()).sum(1), ks)
        return exact

    def correct(self, verifier: Reward | None = None) -> torch.Tensor | None:
        """[C, S]: whether each continuation of each prompt is correct, judged by `verifier` or else by the
        target's hard constraints; None where neither judges."""
        rows = [verdicts(self.texts, [prompt] * len(self.texts), self.log_phi[c], self.target.potential, verifier)
                for c, prompt in enumerate(self.target.prompts)]
        return None if rows[0] is None else torch.stack([row.correct for row in rows])
