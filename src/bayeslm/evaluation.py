"""Before and after: the prior and a trained model scored against the target, with samples of each and of π*.

What a run directory keeps for its report:

    scorecard.json        the model against the target
    scorecard_prior.json  the prior against the same target, on as many samples (where training started)
    samples.jsonl         texts of the prior, the model and the target, one JSON object a line

The target's texts come by sampling–importance–resampling (SIR) from whichever of the two evaluation pools
has the larger effective sample size: weights w = P/q over n draws of q, resampled in proportion to w. Both
pools cover the target's support (a softmax LM gives every text some mass), so either converges to π*; the
record says which pool it came from and its ESS, since a small ESS means few distinct texts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from bayeslm.estimate import NoSupport, Scorecard, scorecard
from bayeslm.lm import LM, Samples
from bayeslm.target import Target

SHOWN = 8  # texts kept per prompt and source


def evaluate(model: LM, target: Target, n: int, *, seed: int, run_dir: Path, prior_too: bool = True
             ) -> Scorecard:
    """Scores `model` (and, with `prior_too`, the target's prior) on n samples per prompt; writes the scorecards
    and samples into run_dir; returns the model's scorecard."""
    cards, pools = {}, {}
    sources = {"model": model, "prior": target.prior} if prior_too else {"model": model}
    for source, lm in sources.items():
        with torch.no_grad():
            pools[source] = lm.sample(target.prompts, n, target.max_new_tokens, seed=seed)
            try:
                cards[source] = scorecard(lm, target, samples=pools[source])
            except NoSupport as error:
                if source == "model":
                    raise
                print(f"bayeslm: warning: the prior is not scored against the target: {error}", file=sys.stderr)
                continue
        name = "scorecard.json" if source == "model" else "scorecard_prior.json"
        (run_dir / name).write_text(json.dumps(cards[source].to_json(), indent=2))
    records = [record for source in cards for record in _shown(source, pools[source], cards[source])]
    records += _target_texts(pools, cards, seed)
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return cards["model"]


def _shown(source: str, samples: Samples, card: Scorecard) -> list[dict]:
    rows = []
    for c, prompt in enumerate(samples.prompts):
        for i in range(min(SHOWN, samples.n)):
            rows.append({"source": source, "prompt": prompt, "text": samples.texts[c * samples.n + i],
                         "reward": card.rewards[c, i].item()})
    return rows


def _target_texts(pools: dict[str, Samples], cards: dict[str, Scorecard], seed: int) -> list[dict]:
    """SHOWN texts per prompt resampled from the pool with the larger ESS, each with its pool's ESS."""
    source = max(cards, key=lambda s: cards[s].ess)  # the prior's card is missing if it had no support
    samples, card = pools[source], cards[source]
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for c, prompt in enumerate(samples.prompts):
        log_w = card.log_weights[c]
        weights = torch.softmax(log_w, 0)
        ess = (1 / (weights ** 2).sum()).item()
        for i in torch.multinomial(weights, SHOWN, replacement=True, generator=generator).tolist():
            rows.append({"source": "target", "prompt": prompt, "text": samples.texts[c * samples.n + i],
                         "reward": card.rewards[c, i].item(), "resampled_from": source, "ess": ess})
    return rows
