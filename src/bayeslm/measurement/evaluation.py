"""Before and after: the prior and a trained model scored against the target, with samples of each and of π*.

What a run directory keeps for its report:

    reference.json        the target's reference: log Z and its π* samples' figures (`bayeslm.measurement.reference`)
    scorecard.json        the model against the target's reference
    scorecard_prior.json  the prior against the same reference, on as many samples (where training started)
    samples.jsonl         texts of the prior, the model and the target, one JSON object a line

Both scorecards are measured against one reference, drawn from the prior apart from the prior's own evaluation
samples (another seed), so that KL(q‖π*) = log Z_ref − ELBO_q of the prior and of the model compare on one scale.
The target's texts come by sampling–importance–resampling (SIR) from the reference's samples, in proportion to
its weights; the record gives its ESS, since a small ESS means few distinct texts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from bayeslm.distributions.lm import LM
from bayeslm.measurement.reference import REFERENCE_SEED, Reference, enumerable, reference
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
             reference_n: int = 1024, world: World = World()) -> Scorecard | None:
    """Scores `model` (and, with `prior_too`, the target's prior) on n samples per prompt against the target's
    reference (`reference_n` samples of the prior per prompt); writes the reference, the scorecards and samples
    into run_dir (when given); returns the model's scorecard (None, with a warning, where no sample of some prompt
    has positive target weight). Data-parallel processes share the sampling (`pooled`); rank 0 writes and gets the
    scorecard, the others None."""
    sources = {"model": model, "prior": target.prior} if prior_too else {"model": model}
    pools = {source: pooled(lm, target, n, seed=seed, world=world) for source, lm in sources.items()}
    ref = target_reference(target, reference_n, seed=seed + REFERENCE_SEED, world=world)
    return world.on_main(_write, pools, ref, sources, target, seed, run_dir)


def target_reference(target: Target, n: int, *, seed: int, source: str = "auto", world: World = World()
                     ) -> Reference | None:
    """The target's reference (`bayeslm.measurement.reference`) on rank 0 (None elsewhere): exact where the space
    is small enough (or `source="exact"`), else n samples of the prior per prompt, cached when one process draws
    them all and shared out when several do. A collective. None, with a warning, where the target has no mass in
    the reference (a rare constraint): each model is then scored on its own samples, and says so."""
    if source == "auto":
        source = "exact" if enumerable(target) else "prior"
    pool = None if source == "exact" or world.size == 1 else pooled(target.prior, target, n, seed=seed, world=world)

    def made():
        try:
            return (reference(target, n, seed=seed, source=source) if pool is None
                    else Reference.from_pool(pool, target))
        except NoSupport as error:
            print(f"bayeslm: warning: no reference for the target, the figures come from each model's own samples: "
                  f"{error}", file=sys.stderr)
            return None

    return world.on_main(made)


def _write(pools: dict[str, ScoredSamples], ref: Reference | None, models: dict[str, LM], target: Target, seed: int,
           run_dir: Path | None) -> Scorecard:
    cards = {}
    for source, samples in pools.items():
        try:
            cards[source] = card(samples, target, reference=ref, model=models[source])
        except NoSupport as error:  # a rare constraint met by no sample: said, and the run still completes
            print(f"bayeslm: warning: the {source} is not scored against the target: {error}", file=sys.stderr)
            continue
    if run_dir is not None:
        if ref is not None:
            (run_dir / "reference.json").write_text(json.dumps(ref.to_json(), indent=2))
        for source, scored in cards.items():
            name = "scorecard.json" if source == "model" else "scorecard_prior.json"
            (run_dir / name).write_text(json.dumps(scored.to_json(), indent=2))
        records = [record for source in cards for record in _shown(source, pools[source], cards[source])]
        records += _target_texts(ref, seed) if ref is not None else []
        (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return cards.get("model")


def _shown(source: str, samples: ScoredSamples, card: Scorecard) -> list[dict]:
    texts = samples.texts_by_prompt()
    return [{"source": source, "prompt": prompt, "text": texts[c][i], "reward": card.rewards[c, i].item()}
            for c, prompt in enumerate(samples.prompts) for i in range(min(SHOWN, len(texts[c])))]


def _target_texts(reference: Reference, seed: int) -> list[dict]:
    """SHOWN texts per prompt resampled from the reference's samples by their weights, each with their ESS."""
    samples = reference.samples
    generator = torch.Generator().manual_seed(seed)
    rows, texts, rewards = [], samples.texts_by_prompt(), samples.grid(samples.reward)
    for c, prompt in enumerate(samples.prompts):
        log_w = reference.ratio[c].log()
        ess = effective_sample_size(log_w).item()
        for i in torch.multinomial(reference.ratio[c], SHOWN, replacement=True, generator=generator).tolist():
            rows.append({"source": "target", "prompt": prompt, "text": texts[c][i], "reward": rewards[c, i].item(),
                         "resampled_from": f"reference ({reference.source})", "ess": ess})
    return rows
