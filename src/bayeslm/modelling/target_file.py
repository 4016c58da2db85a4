"""Target files: a YAML description of π* = π0·φ, validated strictly, every error naming its field.

    prior: default                 # default | toy | {toy: {seed: 0, train_steps: 200}} | a local model directory
                                   # | {path: DIR, trust_remote_code: true} to run the directory's own code
    prompts: ["Write a review:"]   # or prompts_file: prompts.txt (one prompt a line)
    max_new_tokens: 32
    potentials:                    # multiplied together
      - exponential: {reward: sentiment, beta: 0.1}
      - constraint: {predicate: {keyword: [movie]}}            # optional at_least / at_most bounds
      - exponential_family: {features: [length], coefficients: [-0.1]}
      - moments: {features: [{keyword: [movie]}], moments: [0.3], n: 1024, seed: 0}
      - forbid: {strings: [bad]}                               # prefix-aware constraints (SMC steers by them)
      - starts_with: {text: "Once upon a time"}

Rewards, predicates and features are specs of `bayeslm.modelling.rewards.from_spec`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bayeslm.config import ConfigError, unknown_keys
from bayeslm.distributions.lm import LM
from bayeslm.distributions.loading import load_lm, resolve_source
from bayeslm.modelling.potentials import (
    Constraint,
    Exponential,
    ExponentialFamily,
    Potential,
    Product,
    constrain,
)
from bayeslm.modelling.prefix import Forbid, StartsWith
from bayeslm.modelling.rewards import from_spec
from bayeslm.modelling.target import Target


def _fields(where: str, data, required: set[str], optional: set[str]) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {sorted(required | optional)}, got {data!r}")
    unknown = set(data) - required - optional
    if unknown:
        raise ConfigError(unknown_keys(where, unknown, required | optional))
    missing = required - set(data)
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {sorted(missing)}; add them (allowed keys: "
                          f"{sorted(required | optional)})")
    return data


def _number(where: str, value, *, positive: bool = False, integer: bool = False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}")
    return value


def _numbers(where: str, value) -> list[float]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of numbers, got {value!r}")
    return [_number(f"{where}[{i}]", v) for i, v in enumerate(value)]


def _reward(where: str, spec, base: Path):
    if isinstance(spec, dict) and isinstance(spec.get("classifier"), dict) and "path" in spec["classifier"]:
        spec = {"classifier": {**spec["classifier"], "path": str(base / spec["classifier"]["path"])}}
    try:
        return from_spec(spec)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise ConfigError(f"{where}: {error}") from error


def _rewards(where: str, specs, base: Path) -> list:
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"{where}: expected a non-empty list of rewards, got {specs!r}")
    return [_reward(f"{where}[{i}]", s, base) for i, s in enumerate(specs)]


def _potential(where: str, entry, prior: LM, prompts: list[str], max_new_tokens: int, base: Path) -> Potential:
    kinds = ("exponential", "constraint", "exponential_family", "moments", "forbid", "starts_with")
    if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in kinds:
        raise ConfigError(f"{where}: expected a mapping with exactly one key among {list(kinds)}, got {entry!r}")
    (kind, args), = entry.items()
    where = f"{where}.{kind}"
    if kind == "exponential":
        _fields(where, args, {"reward", "beta"}, set())
        return Exponential(_reward(f"{where}.reward", args["reward"], base),
                           _number(f"{where}.beta", args["beta"], positive=True))
    if kind == "constraint":
        _fields(where, args, {"predicate"}, {"at_least", "at_most"})
        bounds = {k: _number(f"{where}.{k}", args[k]) for k in ("at_least", "at_most") if k in args}
        if bounds.get("at_least", float("-inf")) > bounds.get("at_most", float("inf")):
            raise ConfigError(f"{where}: at_least {bounds['at_least']} > at_most {bounds['at_most']}: no value can "
                              "satisfy the constraint")
        return Constraint(_reward(f"{where}.predicate", args["predicate"], base), **bounds)
    if kind == "forbid":
        _fields(where, args, {"strings"}, {"case_sensitive"})
        strings = args["strings"]
        if not isinstance(strings, list) or not strings or not all(isinstance(x, str) and x for x in strings):
            raise ConfigError(f"{where}.strings: expected a non-empty list of non-empty strings, got {strings!r}")
        return Forbid(strings, case_sensitive=bool(args.get("case_sensitive", False)))
    if kind == "starts_with":
        _fields(where, args, {"text"}, set())
        if not isinstance(args["text"], str) or not args["text"].strip():
            raise ConfigError(f"{where}.text: expected a non-blank string, got {args['text']!r}")
        return StartsWith(args["text"])
    if kind == "exponential_family":
        _fields(where, args, {"features", "coefficients"}, set())
        features = _rewards(f"{where}.features", args["features"], base)
        coefficients = _numbers(f"{where}.coefficients", args["coefficients"])
        if len(features) != len(coefficients):
            raise ConfigError(f"{where}: {len(features)} features but {len(coefficients)} coefficients; give one each")
        return ExponentialFamily(features, coefficients)
    _fields(where, args, {"features", "moments"}, {"n", "seed"})
    features = _rewards(f"{where}.features", args["features"], base)
    moments = _numbers(f"{where}.moments", args["moments"])
    if len(features) != len(moments):
        raise ConfigError(f"{where}: {len(features)} features but {len(moments)} moments; give one each")
    n = _number(f"{where}.n", args.get("n", 1024), positive=True, integer=True)
    seed = _number(f"{where}.seed", args.get("seed", 0), integer=True)
    try:
        return constrain(prior, features, moments, prompts=prompts, max_new_tokens=max_new_tokens, n=n, seed=seed)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from error


def _prompts(data: dict, base: Path) -> list[str]:
    if ("prompts" in data) == ("prompts_file" in data):
        raise ConfigError("prompts: give exactly one of 'prompts' (a list of strings) or 'prompts_file' (a path)")
    if "prompts" in data:
        prompts = data["prompts"]
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f"prompts: expected a non-empty list of strings, got {prompts!r}; write e.g. "
                              "prompts: [\"Write a review:\"], or prompts: [\"\"] for unconditional generation")
        return prompts
    path = base / str(data["prompts_file"])
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except OSError as error:
        raise ConfigError(f"prompts_file: cannot read {path} ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"prompts_file: {path} is not UTF-8 text ({error}); re-save it as UTF-8") from None
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise ConfigError(f"prompts_file: {path} holds no prompt (one prompt a line); add at least one non-blank "
                          "line")
    return prompts


def parse_target(data, base: Path = Path("."), *, batch_size: int = 64) -> Target:
    """A `Target` from the parsed YAML of a target file (relative paths resolve against `base`)."""
    _fields("target", data, {"prior", "potentials"}, {"prompts", "prompts_file", "max_new_tokens"})
    max_new_tokens = _number("max_new_tokens", data.get("max_new_tokens", 32), positive=True, integer=True)
    prompts = _prompts(data, base)
    try:
        prior = load_lm(resolve_source(data["prior"], base), batch_size=batch_size)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise ConfigError(f"prior: {error}") from error
    entries = data["potentials"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"potentials: expected a non-empty list, got {entries!r}")
    potentials = [_potential(f"potentials[{i}]", e, prior, prompts, max_new_tokens, base) for i, e in enumerate(entries)]
    potential = potentials[0] if len(potentials) == 1 else Product(potentials)
    try:  # a prompt that cannot fit is a mistake in this file: say so now, not after minutes of sampling
        prior.check_fits(prompts, max_new_tokens)
    except ValueError as error:
        raise ConfigError(f"prompts: {error}") from None
    return Target(prior, potential, prompts, max_new_tokens)


def load_target(path: str | Path, *, batch_size: int = 64) -> Target:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read the target file {path} ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"the target file {path} is not UTF-8 text ({error}); re-save it as UTF-8") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return parse_target(data, path.parent, batch_size=batch_size)
