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

from bayeslm.distributions.lm import LM
from bayeslm.measurement.scorecard import Scorecard, card, pool
from bayeslm.modelling.scored import ScoredSamples
from bayeslm.modelling.target import Target
from bayeslm.parallel.distributed import World
from bayeslm.weights import NoSupport, effective_sample_size

SHOWN = 8  # texts kept per prompt and source


def pooled(lm: LM, target: Target, n: int, *, seed: int, world: World = World()) -> ScoredSamples | None:
    """n samples per prompt of `lm`, scored; data-parallel processes each draw and score their share of every
    prompt's samples (with seeds of their own), and rank 0 gets the whole pool (the others None). A collective."""
    lm.check_compatible(target.prior)  # before drawing anything
    count = n * (world.rank + 1) // world.size - n * world.rank // world.size
    mine = None
    if count:
        with torch.no_grad():
            mine = pool(lm, target, lm.sample(target.prompts, count, target.max_new_tokens,
                                              seed=seed + 1_000_003 * world.rank))
    parts = [part for part in world.gather([mine], to_main=True) if part is not None]
    return ScoredSamples.cat(parts).sorted_by_prompt() if world.main else None


def evaluate(model: LM, target: Target, n: int, *, seed: int, run_dir: Path | None, prior_too: bool = True,
             world: World = World()) -> Scorecard | None:
    """Scores `model` (and, with `prior_too`, the target's prior) on n samples per prompt; writes the scorecards
    and samples into run_dir (when given); returns the model's scorecard (None, with a warning, where no sample of
    some prompt has positive target weight). Data-parallel processes share the sampling
    (`pooled`); rank 0 writes and gets the scorecard, the others None."""
    sources = {"model": model, "prior": target.prior} if prior_too else {"model": model}
    pools = {source: pooled(lm, target, n, seed=seed, world=world) for source, lm in sources.items()}
    return world.on_main(_write, pools, target, seed, run_dir)


def _write(pools: dict[str, ScoredSamples], target: Target, seed: int, run_dir: Path | None) -> Scorecard:
    cards = {}
    for source, samples in pools.items():
        try:
            cards[source] = card(samples, target)
        except NoSupport as error:  # a rare constraint met by no sample: said, and the run still completes
            print(f"bayeslm: warning: the {source} is not scored against the target: {error}", file=sys.stderr)
            continue
    if run_dir is not None:
        for source, scored in cards.items():
            name = "scorecard.json" if source == "model" else "scorecard_prior.json"
            (run_dir / name).write_text(json.dumps(scored.to_json(), indent=2))
        records = [record for source in cards for record in _shown(source, pools[source], cards[source])]
        records += _target_texts(pools, cards, seed) if cards else []
        (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return cards.get("model")


def _shown(source: str, samples: ScoredSamples, card: Scorecard) -> list[dict]:
    texts = samples.texts_by_prompt()
    return [{"source": source, "prompt": prompt, "text": texts[c][i], "reward": card.rewards[c, i].item()}
            for c, prompt in enumerate(samples.prompts) for i in range(min(SHOWN, len(texts[c])))]


def _target_texts(pools: dict[str, ScoredSamples], cards: dict[str, Scorecard], seed: int) -> list[dict]:
    """SHOWN texts per prompt resampled from the pool with the larger ESS, each with its pool's ESS."""
    source = max(cards, key=lambda s: cards[s].ess)  # the prior's card is missing if it had no support
    samples, card = pools[source], cards[source]
    generator = torch.Generator().manual_seed(seed)
    rows, texts = [], samples.texts_by_prompt()
    for c, prompt in enumerate(samples.prompts):
        log_w = card.log_weights[c]
        ess = effective_sample_size(log_w).item()
        for i in torch.multinomial(torch.softmax(log_w, 0), SHOWN, replacement=True, generator=generator).tolist():
            rows.append({"source": "target", "prompt": prompt, "text": texts[c][i],
                         "reward": card.rewards[c, i].item(), "resampled_from": source, "ess": ess})
    return rows
