"""Issue 21: bayeslm's SMC with the masked proposal against genlm-control's SMC with AWRS (its recommended unit
sampler for hard constraints: adaptive weighted rejection, which draws from the same locally constrained
distribution and weights by an unbiased estimate of its normaliser), on the same prior, the same target, the same
prompt token ids, the same particle count, resampling threshold and length limit.

    .venv/bin/python bench/vs_genlm.py [--particles 32] [--runs 3] [--toy-runs 300] [--parts toy,date,json]

Both target π*(x|c) ∝ π0(x|c)·1[x ∈ L] over continuations ending in EOS within max_new_tokens tokens (genlm's
`max_tokens` counts EOS and forces it at the limit with its weight, which is the same target).

toy    exact fidelity on the byte-level toy of examples/toy_regex.yaml, where π* is enumerated. Per prompt, over
       `--toy-runs` independent runs of n particles: E[Ẑ]/Z (unbiased: 1 within noise; z is its distance in
       standard errors), mean log Ẑ − log Z (Jensen's gap, ≤ 0), the p-value of Hotelling's T² test that
       Ẑ·Σ_i w̄_i δ(x_i) averages to Z·π* on the cells both visit often, and the TV distance of the pooled
       Ẑ-weighted particles to π*.
date   SmolLM2 with examples/date_regex.yaml (a regex); json: examples/json_city.yaml (a JSON schema; genlm
json   with its `JsonSchema` potential, which also forbids some whitespace that llguidance's JSON allows, so the
       two languages differ at the margins). Per prompt and run (after one warm-up run per side and target): wall
       seconds of one SMC run, the final ESS (Kish, of the returned weights; and with the weights of equal
       outputs summed, so that resampled copies count once), distinct outputs, log Ẑ. Reported: seconds per run,
       seconds per effective sample, and the sd of log Ẑ over runs (the noise of the estimate at this particle
       count). Both sides estimate the same log Z on the regex target: their means must agree.
Each side's first next-token distribution is compared too (max |Δ log π0|): the same model, the same prompt.

genlm-control lives in its own virtual environment, bench/.venv-genlm (created on first use: CPU torch 2.13.0,
then genlm-control 0.4.1); its side runs as a subprocess of this script (`--genlm-worker`). Its LM runs on the
`hf` backend with batch_size = the particle count (its default, 20, would split each step in two). The toy's
word-level tokenizer cannot encode arbitrary text, which genlm's vocabulary check requires, so the worker gives
genlm the toy's byte vocabulary directly (each token's bytes, as llguidance reads them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENLM_VENV = HERE / ".venv-genlm"
GENLM_PY = GENLM_VENV / "bin" / "python"
EXAMPLES = HERE.parent / "examples"
TOY = {"toy": {"seed": 0, "train_steps": 200, "byte_level": True}}
TOY_REGEX = r" the (good|bad)( very)* movie| not( good| bad)*"
TARGETS = {"date": "date_regex.yaml", "json": "json_city.yaml"}


# ----- the genlm side (runs inside bench/.venv-genlm) ---------------------------------------------------------------

def genlm_worker(spec_path: str):
    import numpy as np
    import torch

    spec = json.loads(Path(spec_path).read_text())
    if spec["toy"]:
        import genlm.backend.tokenization.vocab as vocab

        def toy_bytes(tokenizer):  # "Ġgood" is b" good"; "<eos>", "<bos>" keep their text, as genlm reads specials
            names = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            return [n.encode() if n.startswith("<") else tokenizer.convert_tokens_to_string([n]).encode()
                    for n in names]

        vocab.get_byte_vocab = toy_bytes
    from genlm.control import AWRS, BoolFSA, JsonSchema, PromptedLLM

    llm = PromptedLLM.from_name(spec["model_dir"], backend="hf", eos_byte_strings=[e.encode() for e in spec["eos"]],
                                hf_opts={"dtype": torch.float32, "device_map": None}, batch_size=spec["particles"])
    if spec["kind"] == "regex":
        language = BoolFSA.from_regex(spec["source"])
    else:
        language = JsonSchema(spec["source"])
    sampler = AWRS(llm, language.coerce(llm, f=b"".join))

    async def run_all():
        prompts = []
        for c, ids in enumerate(spec["prompt_ids"]):
            llm.prompt_ids = ids
            first = await llm.logw_next([])
            first_step = {("EOS" if t is llm.eos else str(t.token_id)): float(w) for t, w in first.items()}
            if spec["warmup"] and c == 0:
                await sampler.smc(n_particles=spec["particles"], ess_threshold=spec["ess_threshold"],
                                  max_tokens=spec["max_tokens"])
            runs = []
            for _ in range(spec["runs"]):
                started = time.perf_counter()
                seqs = await sampler.smc(n_particles=spec["particles"], ess_threshold=spec["ess_threshold"],
                                         max_tokens=spec["max_tokens"])
                seconds = time.perf_counter() - started
                texts, log_w = [], []
                for context, w in seqs:
                    done = bool(context) and context[-1] is llm.eos
                    body = b"".join(t.byte_string for t in (context[:-1] if done else context))
                    texts.append(body.decode("utf-8", "replace") if done else None)
                    log_w.append(float(w) if done else -math.inf)
                runs.append({"seconds": seconds, "log_z": float(seqs.log_ml), "texts": texts, "log_w": log_w})
            prompts.append({"first_step": first_step, "runs": runs})
        return prompts

    np.random.seed(spec["seed"])  # genlm resamples with numpy's global generator
    result = {"prompts": asyncio.run(run_all()), "version": version("genlm-control"),
              "torch_threads": torch.get_num_threads()}
    print("RESULT " + json.dumps(result), flush=True)


def run_genlm(spec: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([str(GENLM_PY), __file__, "--genlm-worker", f.name], capture_output=True, text=True,
                          env=env)
    os.unlink(f.name)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise RuntimeError(f"the genlm side failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


# ----- the bayeslm side and the comparison --------------------------------------------------------------------------

def bayeslm_runs(bl, target, prompt, runs, particles, ess_threshold, seed, warmup):
    """`runs` independent SMC runs on one prompt, one at a time (as a user samples), each timed."""
    one = target.given([prompt])
    masked = bl.masked(one)
    if warmup:
        bl.sample(one, "smc", n=particles, proposal=masked, seed=seed - 1, ess_threshold=ess_threshold)
    out = []
    for r in range(runs):
        started = time.perf_counter()
        draws = bl.sample(one, "smc", n=particles, proposal=masked, seed=seed + r, ess_threshold=ess_threshold)
        seconds = time.perf_counter() - started
        out.append({"seconds": seconds, "log_z": draws.log_z_per_prompt[0].item(), "texts": draws.samples.texts,
                    "log_w": draws.log_weight.tolist()})
    return out


def batched_runs(bl, target, prompt, runs, particles, ess_threshold, seed):
    """`runs` independent SMC runs on one prompt in one call (for the toy's statistics; not timed)."""
    draws = bl.sample(target.given([prompt] * runs), "smc", n=particles, proposal=bl.masked(target), seed=seed,
                      ess_threshold=ess_threshold)
    texts, log_w = draws.samples.texts, draws.log_weight.tolist()
    return [{"log_z": draws.log_z_per_prompt[r].item(), "texts": texts[r * particles:(r + 1) * particles],
             "log_w": log_w[r * particles:(r + 1) * particles]} for r in range(runs)]


def first_step_gap(lm, ids: list[int], genlm_first: dict) -> float:
    """max |log π0(y | prompt)| difference between the two sides over the first token (EOS merged as genlm does)."""
    import torch

    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0, -1].double().log_softmax(-1)
    eos = torch.logsumexp(logits[lm.eos_ids], 0).item()
    gaps = [abs(w - (eos if key == "EOS" else logits[int(key)].item())) for key, w in genlm_first.items()
            if math.isfinite(w)]
    return max(gaps)


def weighted(run) -> tuple[list[str], list[float]]:
    """A run's particles with their normalised weights (dead ones dropped)."""
    live = [(t, w) for t, w in zip(run["texts"], run["log_w"]) if t is not None and math.isfinite(w)]
    if not live:
        return [], []
    top = max(w for _, w in live)
    total = sum(math.exp(w - top) for _, w in live)
    return [t for t, _ in live], [math.exp(w - top) / total for _, w in live]


def kish(w: list[float]) -> float:
    """Kish's effective sample size (Σw)²/Σw² of weights, as the scorecard computes it (0 without any)."""
    import torch

    from bayeslm.weights import effective_sample_size

    return effective_sample_size(torch.tensor(w, dtype=torch.float64).log()).item()


def merge(texts: list[str], w: list[float]) -> list[float]:
    """The weights of equal outputs summed: copies made by resampling count once (so do equal draws)."""
    total = {}
    for t, x in zip(texts, w):
        total[t] = total.get(t, 0.0) + x
    return list(total.values())


def fidelity(runs, texts, posterior, log_z, cells) -> dict:
    """Exact checks of one side's runs on one prompt (see the module's docstring)."""
    import numpy as np
    import scipy.stats

    index = {t: i for i, t in enumerate(texts)}
    z_hat = np.array([math.exp(r["log_z"]) for r in runs])
    z = math.exp(log_z)
    mass = np.zeros((len(runs), len(texts)))  # Ẑ_r Σ_i w̄_ri δ(x_ri), per run
    for r, run in enumerate(runs):
        for t, w in zip(*weighted(run)):
            mass[r, index[t]] += z_hat[r] * w
    se = z_hat.std(ddof=1) / math.sqrt(len(runs))
    d = mass[:, cells] - z * posterior[cells]
    k, mean = len(cells), d.mean(0)
    t2 = len(runs) * mean @ np.linalg.solve(np.atleast_2d(np.cov(d.T)), mean)
    p = scipy.stats.f.sf((len(runs) - k) / (k * (len(runs) - 1)) * t2, k, len(runs) - k)
    pooled = mass.sum(0) / mass.sum()
    return {"z_ratio": z_hat.mean() / z, "z_ratio_se": se / z, "z_score": (z_hat.mean() - z) / se,
            "log_z_gap": float(np.mean([r["log_z"] for r in runs]) - log_z), "t2_p": float(p), "cells": k,
            "tv": 0.5 * float(np.abs(pooled - posterior).sum())}


def toy_part(bl, args, workdir: Path) -> dict:
    import torch

    from bayeslm.measurement.exact import Exact

    prior = bl.load_lm(TOY)
    target = (prior * bl.regex(prior, TOY_REGEX)).given(["", "the movie"], max_new_tokens=4)
    exact = Exact(target)
    q = exact.log_probs(bl.masked(target)).exp()
    prior.model.save_pretrained(workdir / "toy")
    prior.tokenizer.save_pretrained(workdir / "toy")
    ids = prior.encode_prompts(target.prompts)
    genlm = run_genlm({"toy": True, "model_dir": str(workdir / "toy"), "eos": ["<eos>"], "kind": "regex",
                       "source": TOY_REGEX, "prompt_ids": ids, "particles": args.toy_particles,
                       "runs": args.toy_runs, "ess_threshold": args.ess_threshold, "max_tokens": 4, "seed": args.seed,
                       "warmup": False})
    rows = {}
    for c, prompt in enumerate(target.prompts):
        member = torch.isfinite(exact.log_target[c])  # the language's strings (distinct texts); π* = 0 elsewhere
        names = [t for t, inside in zip(exact.texts, member.tolist()) if inside]
        posterior = exact.log_posterior[c][member].exp().numpy()
        visits = q[c][member] * args.toy_runs * args.toy_particles
        cells = [i for i in range(len(names)) if posterior[i] > 1e-3 and visits[i] > 50]
        ours = batched_runs(bl, target, prompt, args.toy_runs, args.toy_particles, args.ess_threshold,
                            seed=args.seed + 11)
        log_z = exact.log_z[c].item()
        rows[prompt or '""'] = {
            "log_z": log_z, "first_step_gap": first_step_gap(prior, ids[c], genlm["prompts"][c]["first_step"]),
            **{side: fidelity(runs, names, posterior, log_z, cells)
               for side, runs in (("bayeslm", ours), ("genlm", genlm["prompts"][c]["runs"]))}}
    return {"rows": rows, "genlm": genlm["version"]}


def smollm_part(bl, args, name: str) -> dict:
    import numpy as np

    from bayeslm.distributions.loading import cache_dir
    from bayeslm.modelling.potentials.language import languages
    from bayeslm.modelling.target_file import load_target

    target = load_target(EXAMPLES / TARGETS[name])
    prior = target.prior
    (language,) = languages(target)
    ids = prior.encode_prompts(target.prompts)
    genlm = run_genlm({"toy": False, "model_dir": str(cache_dir() / "smollm2-135m-instruct"),
                       "eos": prior.tokenizer.convert_ids_to_tokens(prior.eos_ids.tolist()),
                       "kind": {"regex": "regex", "json_schema": "json"}[language.kind], "source": language.source,
                       "prompt_ids": ids, "particles": args.particles, "runs": args.runs,
                       "ess_threshold": args.ess_threshold, "max_tokens": target.max_new_tokens, "seed": args.seed,
                       "warmup": True})
    rows = []
    for c, prompt in enumerate(target.prompts):
        ours = bayeslm_runs(bl, target, prompt, args.runs, args.particles, args.ess_threshold,
                            seed=args.seed + 21 + 10 * c, warmup=c == 0)
        row = {"prompt": prompt, "first_step_gap": first_step_gap(prior, ids[c], genlm["prompts"][c]["first_step"])}
        for side, runs in (("bayeslm", ours), ("genlm", genlm["prompts"][c]["runs"])):
            live = [weighted(r) for r in runs]
            ess = [kish(w) for _, w in live]
            merged = [kish(merge(texts, w)) for texts, w in live]
            distinct = [len(set(texts)) for texts, _ in live]
            log_z = [r["log_z"] for r in runs]
            seconds = [r["seconds"] for r in runs]
            row[side] = {"seconds": float(np.mean(seconds)), "ess": float(np.mean(ess)),
                         "ess_merged": float(np.mean(merged)),
                         "distinct": float(np.mean(distinct)), "log_z": float(np.mean(log_z)),
                         "log_z_sd": float(np.std(log_z, ddof=1)) if len(log_z) > 1 else None,
                         "example": live[0][0][:2]}
        rows.append(row)
    return {"rows": rows, "genlm": genlm["version"], "max_new_tokens": target.max_new_tokens,
            "summary": summarise(rows, args.runs)}


def summarise(rows, runs) -> dict:
    """Seconds per effective sample over all prompts, each side, and how far the two log Ẑ lie apart."""
    per = {side: [sum(r[side]["seconds"] for r in rows) / sum(r[side][key] for r in rows)
                  for key in ("ess", "ess_merged")] for side in ("bayeslm", "genlm")}
    gaps = [r["genlm"]["log_z"] - r["bayeslm"]["log_z"] for r in rows]
    variance = sum((r["genlm"]["log_z_sd"] or 0) ** 2 + (r["bayeslm"]["log_z_sd"] or 0) ** 2 for r in rows)
    return {**per, "ratio": [g / b for g, b in zip(per["genlm"], per["bayeslm"])],
            "log_z_gap": sum(gaps) / len(gaps), "log_z_gap_se": math.sqrt(variance / runs) / len(gaps)}


def report(figures: dict):
    toy = figures.get("toy")
    if toy:
        print(f"\n## toy (examples/toy_regex.yaml), exact: {figures['settings']['toy_runs']} runs of "
              f"{figures['settings']['toy_particles']} particles per prompt")
        print(f"{'prompt':11s} {'side':8s} {'E[Ẑ]/Z':>14s} {'z':>6s} {'E log Ẑ − log Z':>16s} {'T² p':>7s} "
              f"{'TV':>6s} {'max|Δ log π0|':>14s}")
        for prompt, row in toy["rows"].items():
            for side in ("bayeslm", "genlm"):
                f = row[side]
                print(f"{prompt:11s} {side:8s} {f['z_ratio']:8.4f} ± {f['z_ratio_se']:.4f} {f['z_score']:6.2f} "
                      f"{f['log_z_gap']:16.4f} {f['t2_p']:7.3f} {f['tv']:6.3f} {row['first_step_gap']:14.2e}")
    for name in TARGETS:
        part = figures.get(name)
        if not part:
            continue
        print(f"\n## {name} ({TARGETS[name]}): SmolLM2, {figures['settings']['particles']} particles, "
              f"{figures['settings']['runs']} timed runs per prompt")
        print(f"{'prompt':6s} {'side':8s} {'s/run':>7s} {'ESS':>6s} {'merged':>6s} {'distinct':>8s} "
              f"{'log Ẑ':>7s} {'sd':>6s}")
        for c, row in enumerate(part["rows"]):
            for side in ("bayeslm", "genlm"):
                f = row[side]
                sd = "—" if f["log_z_sd"] is None else f"{f['log_z_sd']:.2f}"
                print(f"{c:<6d} {side:8s} {f['seconds']:7.2f} {f['ess']:6.1f} {f['ess_merged']:6.1f} "
                      f"{f['distinct']:8.1f} {f['log_z']:7.2f} {sd:>6s}")
        summary = part["summary"]
        print(f"seconds per effective sample (Kish / duplicates merged): bayeslm {summary['bayeslm'][0]:.3f} / "
              f"{summary['bayeslm'][1]:.3f}, genlm {summary['genlm'][0]:.3f} / {summary['genlm'][1]:.3f} "
              f"(genlm/bayeslm {summary['ratio'][0]:.1f}× / {summary['ratio'][1]:.1f}×)")
        print(f"log Ẑ, genlm − bayeslm, mean over prompts: {summary['log_z_gap']:+.3f} ± "
              f"{summary['log_z_gap_se']:.3f}; "
              f"max|Δ log π0| of the first step {max(r['first_step_gap'] for r in part['rows']):.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genlm-worker", help=argparse.SUPPRESS)
    parser.add_argument("--parts", default="toy,date,json")
    parser.add_argument("--particles", type=int, default=32, help="SMC particles on SmolLM2")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per prompt on SmolLM2")
    parser.add_argument("--toy-particles", type=int, default=16)
    parser.add_argument("--toy-runs", type=int, default=300)
    parser.add_argument("--ess-threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="of both sides' random draws")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.genlm_worker:
        return genlm_worker(args.genlm_worker)
    sys.path.insert(0, str(HERE))
    import common

    common.print_machine()
    common.peer_venv(GENLM_VENV, "genlm-control==0.4.1")
    import bayeslm as bl

    figures = {"machine": common.machine(), "settings": {k: v for k, v in vars(args).items() if k != "genlm_worker"}}
    with tempfile.TemporaryDirectory() as workdir:
        for part in args.parts.split(","):
            if part == "toy":
                figures["toy"] = toy_part(bl, args, Path(workdir))
            else:
                figures[part] = smollm_part(bl, args, part)
    report(figures)
    common.emit_json(args.json, figures)


if __name__ == "__main__":
    main()
