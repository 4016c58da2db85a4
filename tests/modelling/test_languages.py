"""Structured evidence (regular expressions, grammars, JSON schemas) checked exactly on byte-level toys: a
language is judged on bytes and EOS; the exact posterior matches an independent oracle; the masked sampler's
distortion is measured exactly and SIR, IMH and SMC from it pass χ² tests against π*; SMC's Ẑ from it is
unbiased; malformed languages are clear errors."""

import json
import math
import re

import pytest
import scipy.stats
import torch
from conftest import chi_square_p, rows_of, run, write
from tokenizers import Tokenizer, decoders, models
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import bayeslm as bl
from bayeslm.config import ConfigError
from bayeslm.distributions.language import Language
from bayeslm.distributions.lm import LM
from bayeslm.measurement.exact import Exact
from bayeslm.samplers import imh, sir, smc

SIGNIFICANCE = 1e-3
BYTE_TOY = {"toy": {"seed": 0, "train_steps": 200, "byte_level": True}}
PROMPTS = ["", "the movie"]
REGEX = r" the (good|bad)( very)* movie| not( good| bad)*"
# Not regular: " the"^k " good" " movie"^k.
NESTED = 'start: " the" start " movie" | " good"'


def regex_oracle(text: str) -> bool:
    return re.fullmatch(REGEX, text) is not None


def nested_oracle(text: str) -> bool:
    words = text.split(" ")[1:] if text.startswith(" ") else [None]
    k = len(words) // 2
    return len(words) % 2 == 1 and words == ["the"] * k + ["good"] + ["movie"] * k


@pytest.fixture(scope="module")
def prior():
    return bl.load_lm(BYTE_TOY)


@pytest.fixture(scope="module")
def target(prior):
    return (prior * bl.regex(prior, REGEX)).given(PROMPTS, max_new_tokens=4)


@pytest.fixture(scope="module")
def exact(target):
    return Exact(target)


def test_a_language_is_judged_on_bytes_and_ends_only_with_eos():
    """A token may end inside a multi-byte character: " café" is " caf" + 0xC3 + 0xA9 here."""
    vocab = {"<eos>": 0, "<bos>": 1, "Ġcaf": 2, "Ã": 3, "©": 4, "Ġdone": 5}  # Ã, © are the bytes 0xC3, 0xA9
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=6, n_embd=8, n_layer=1, n_head=1, n_positions=16,
                                                eos_token_id=0, bos_token_id=1, pad_token_id=0))
    lm = LM(model, tokenizer, name="café")
    assert lm.decode([[2, 3, 4]]) == [" café"]
    language = Language("regex", " café( done)?", lm)
    assert language.accepts([[2, 3, 4, 0], [2, 3, 4, 5, 0], [2, 3, 0], [2, 3, 4], [0]]).tolist() == [
        True, True, False, False, False]  # ... not inside a character, not cut short of EOS, not empty
    assert language.viable([[], [2], [2, 3], [2, 3, 4, 5], [3], [2, 4]]).tolist() == [
        True, True, True, True, False, False]
    m = language.matcher()
    m.consume_tokens([2, 3])
    assert language.mask(m).nonzero().flatten().tolist() == [4]  # inside "é": only its second byte
    m.consume_token(4)
    assert language.mask(m).nonzero().flatten().tolist() == [0, 5]  # complete: EOS, or go on


@pytest.mark.parametrize("kind, source, oracle", [("regex", REGEX, regex_oracle),
                                                  ("grammar", NESTED, nested_oracle)])
def test_the_exact_posterior_is_the_prior_cut_to_the_language(prior, kind, source, oracle):
    potential = bl.regex(prior, source) if kind == "regex" else bl.grammar(prior, source)
    target = (prior * potential).given(PROMPTS, max_new_tokens=5)
    exact = Exact(target)
    eos, special = set(prior.eos_ids.tolist()), set(prior.tokenizer.all_special_ids)
    # A special token (BOS) decodes to no text but is no byte of the language: only the final EOS may be one.
    member = torch.tensor([bool(x) and x[-1] in eos and not special & set(x[:-1]) and oracle(t)
                           for x, t in zip(exact.sequences, exact.texts)])
    assert member.any() and not member.all()
    assert torch.equal(torch.isfinite(exact.log_target[0]), member)  # the same set, by an independent judge
    assert torch.allclose(exact.log_z, torch.logsumexp(exact.log_prior[:, member], 1), atol=1e-12)
    # Rejection from the prior (M = 1) draws it.
    draws = bl.sample(target, "rejection", n=300, seed=1)
    for c in range(2):
        assert chi_square_p(rows_of(draws, c), exact.log_posterior[c].exp(), exact.sequences) > SIGNIFICANCE


def test_the_masked_sampler_is_a_distribution_off_the_target_by_what_it_measures(target, exact):
    q = bl.masked(target)
    log_q = exact.log_probs(q)
    assert torch.allclose(log_q.exp().sum(1), torch.ones(2, dtype=torch.float64), atol=1e-5)  # it sums to one
    samples = q.sample(PROMPTS, 64, 4, seed=0)
    assert torch.allclose(samples.log_prob, q.log_prob(samples.sample_prompts, samples.continuations), atol=1e-5)
    prefixes = [x[:-1] if x[-1] in q.eos_ids.tolist() else x for x in samples.continuations]
    assert target.potential.language.viable(prefixes).all()  # it never leaves the language
    truth = exact.scorecard(q)
    assert truth["kl_target_model"] > 0.3 and truth["tv_model_target"] > 0.2  # the distortion, exactly
    card = bl.scorecard(q, target, n=1000)
    for key in ("kl_target_model", "tv_model_target"):
        assert abs(card[key].value - truth[key]) <= 3 * card[key].stderr + 1e-6, key  # float32 scores


@pytest.mark.slow
def test_sir_imh_and_smc_from_the_masked_proposal_draw_the_target(target, exact):
    q = bl.masked(target)
    posterior = [exact.log_posterior[c].exp() for c in range(2)]
    resampled = sir(target, q, n=500, pool_size=5000, seed=2)
    chains = imh(target, q, n=500, chains=500, burn_in=30, seed=3)  # 0.775^30 < 1e-3: 1 − 1/max w per step
    for draws in (resampled, chains):
        for c in range(2):
            assert chi_square_p(rows_of(draws, c), posterior[c], exact.sequences) > SIGNIFICANCE, draws.method
    # SMC: a particle picked by weight from one run is only approximately from π* (the bias is O(1/n)), but
    # Ẑ·Σ_i w̄_i δ(x_i) is an unbiased estimate of Z·π* (Del Moral): Hotelling's T² over independent runs tests it.
    runs = 500
    particles = smc(target.given(["the movie"] * runs), q, n=16, ess_threshold=0.5, seed=4)
    # Cells the particles visit often enough for the mean to be near normal (q rarely proposes some of π*'s).
    visits = exact.log_probs(q)[1].exp() * runs * 16
    cells = [x for x, p, v in zip(exact.sequences, posterior[1].tolist(), visits.tolist()) if p > 1e-3 and v > 50]
    truth = torch.tensor([posterior[1][exact.sequences.index(x)] for x in cells]) * exact.log_z[1].exp()
    assert unbiased_measure_p(particles, cells, truth, runs) > SIGNIFICANCE


def unbiased_measure_p(draws, cells, truth, runs) -> float:
    """p-value of Hotelling's T² test that the runs' Ẑ_r·Σ_i w̄_ri·1[x_ri = cell] average to `truth` per cell."""
    n = len(draws.samples) // runs
    mass = draws.weights().reshape(runs, n) * draws.log_z_per_prompt.exp()[:, None]
    conts = draws.samples.continuations
    d = torch.stack([(mass * torch.tensor([[conts[r * n + i] == x for i in range(n)] for r in range(runs)])).sum(1)
                     for x in cells], 1) - truth
    k, mean = len(cells), d.mean(0)
    t2 = runs * mean @ torch.linalg.solve(torch.cov(d.T), mean)
    return scipy.stats.f.sf((runs - k) / (k * (runs - 1)) * t2.item(), k, runs - k)


def test_smc_from_the_masked_proposal_estimates_z_without_bias(target, exact):
    runs = 300
    draws = smc(target.given(["the movie"] * runs), bl.masked(target), n=8, ess_threshold=0.9, seed=6)
    z_hat = draws.log_z_per_prompt.exp()
    z = exact.log_z[1].exp().item()
    assert abs(z_hat.mean().item() - z) <= 3 * z_hat.std().item() / math.sqrt(runs), (z_hat.mean(), z)
    assert draws.figures["resampling_steps"] > 0


def test_languages_combine_with_any_potential(prior):
    sentiment = bl.Exponential(bl.rewards.keyword(["good"]), beta=0.5)
    target = (prior * (bl.regex(prior, REGEX) * sentiment)).given(PROMPTS, max_new_tokens=4)
    exact = Exact(target)
    alone = Exact((prior * bl.regex(prior, REGEX)).given(PROMPTS, max_new_tokens=4))
    good = exact.stats["keyword:good"]
    assert torch.allclose(exact.log_target, alone.log_target + 2 * good, atol=1e-12)  # log φ adds up


def test_a_json_schema_target(prior):
    words = bl.load_lm({"toy": {"seed": 0, "train_steps": 50, "byte_level": True,
                                "words": ["the", "movie", '{"a":', "1", "2", "}"]}})
    schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 2}}, "required": ["a"]}
    target = (words * bl.json_schema(words, schema)).given(PROMPTS, max_new_tokens=5)
    exact = Exact(target)
    kept = [t for t, lp in zip(exact.texts, exact.log_target[0].tolist()) if lp > -math.inf]
    assert kept == [' {"a": 2 }']  # JSON, whitespace around tokens allowed; a = 1 is below the minimum


@pytest.mark.parametrize("entry, message", [
    ({"regex": {"pattern": "(the"}}, "potentials[0].regex: invalid regex"),
    ({"grammar": {"lark": "start: foo"}}, 'unknown name: "foo"'),
    ({"grammar": {}}, "grammar needs exactly one of lark"),
    ({"json_schema": {"schema": {"type": "strin"}}}, "Invalid type: strin"),
    ({"json_schema": {"file": "missing.json"}}, "cannot read the schema file"),
])
def test_a_malformed_language_is_a_clear_error_naming_the_field(tmp_path, capsys, entry, message):
    path = write(tmp_path / "t.yaml", {"prior": BYTE_TOY, "prompts": PROMPTS, "max_new_tokens": 3,
                                       "potentials": [entry]})
    code, _, err = run(capsys, "evaluate", "--target", path, "-n", "8")
    assert code == 2 and message in err and "potentials[0]" in err, err


def test_a_tokenizer_that_is_not_byte_level_is_refused_with_the_fix(capsys, tmp_path):
    with pytest.raises(ConfigError, match="byte-level .* toy priors have one with"):
        bl.regex(bl.load_lm({"toy": {"seed": 0}}), "the")


def test_a_language_out_of_reach_within_max_new_tokens_is_said_so(prior, tmp_path, capsys):
    target = (prior * bl.regex(prior, " the good very very movie")).given(PROMPTS, max_new_tokens=3)
    with pytest.raises(bl.NoSupport, match=r"no string of the language is reached within max_new_tokens=3.*Raise"):
        bl.sample(target, "rejection", n=4, budget=50)
    reachable = (prior * bl.regex(prior, " the good very very movie")).given(PROMPTS, max_new_tokens=6)
    with pytest.raises(bl.NoSupport, match="reachable but rare under the proposal"):
        bl.sample(reachable, "rejection", n=4, budget=50)
    path = write(tmp_path / "t.yaml", {"prior": BYTE_TOY, "prompts": PROMPTS, "max_new_tokens": 3,
                                       "potentials": [{"regex": {"pattern": " the good very very movie"}}]})
    code, _, err = run(capsys, "sample", "--target", path, "--method", "smc", "--mask", "-n", "8")
    assert code == 1 and "within max_new_tokens=3" in err, err


def test_the_cli_masks_the_proposal_and_measures_the_masked_sampler(tmp_path, capsys, exact):
    path = write(tmp_path / "t.yaml", {"prior": BYTE_TOY, "prompts": PROMPTS, "max_new_tokens": 4,
                                       "potentials": [{"regex": {"pattern": REGEX}}]})
    code, out, _ = run(capsys, "evaluate", "--target", path, "--mask", "--exact", "-n", "64", "--json")
    card = json.loads(out)
    assert code == 0 and card["model"] == "toy masked"
    assert card["exact"]["kl_target_model"] > 0.3  # the distortion of locally constrained decoding
    code, out, _ = run(capsys, "sample", "--target", path, "--method", "smc", "--mask", "-n", "8")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 16 and all(regex_oracle(r["text"]) for r in rows if r["weight"] > 0)
    bare = write(tmp_path / "bare.yaml", {"prior": BYTE_TOY, "prompts": PROMPTS, "max_new_tokens": 3,
                                          "potentials": [{"constraint": {"predicate": {"keyword": ["good"]}}}]})
    code, _, err = run(capsys, "sample", "--target", bare, "--method", "smc", "--mask", "-n", "8")
    assert code == 2 and "--mask: the target" in err and "has no regex, grammar or json_schema" in err, err


def test_dpg_from_the_masked_proposal_learns_the_language(prior, target, exact):
    """Training towards a structural target: DPG's weights P/q stay exact under the mask, every sample it learns
    from is viable, and the trained model, masked in turn, needs far less correction than the masked prior."""
    run = bl.train(target, bl.DPG(proposal="prior", mask=True), steps=40, lr=3e-3, samples_per_prompt=16,
                   eval_n=0, quiet=True)
    before, after = exact.scorecard(prior), exact.scorecard(run.model)
    assert after["kl_target_model"] < 0.3 * before["kl_target_model"]  # KL(π*‖π_θ), from −log Z ≈ 3.2
    masked_before, masked_after = exact.scorecard(bl.masked(target)), exact.scorecard(bl.masked(target, run.model))
    assert masked_after["kl_target_model"] < 0.5 * masked_before["kl_target_model"]
    bare = (prior * bl.Constraint(bl.rewards.keyword(["good"]))).given(PROMPTS, max_new_tokens=4)
    with pytest.raises(ConfigError, match="objective.dpg.mask: the target .* has no regex"):
        bl.train(bare, bl.DPG(mask=True), steps=1, eval_n=0, quiet=True)
