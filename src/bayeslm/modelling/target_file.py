"""Target files: a YAML description of π* = π0·φ, validated strictly, every error naming its field.

    prior: default                 # default | toy | {toy: {seed: 0, train_steps: 200}} | a local model directory
                                   # | ORG/NAME, a Hugging Face Hub id (from the local cache)
                                   # | {path: DIR, trust_remote_code: true} to run the directory's own code
    prompts: ["Write a review:"]   # or prompts_file / prompts_dataset (`bayeslm.modelling.prompts`)
    max_new_tokens: 32
    chat: {system: "Be brief."}    # the prior's chat template: true/false/{system: ...}; absent: the tokenizer's
    potentials:                    # multiplied together
      - exponential: {reward: sentiment, beta: 0.1}
      - constraint: {predicate: {keyword: [movie]}}            # optional at_least / at_most bounds
      - exponential_family: {features: [length], coefficients: [-0.1]}
      - moments: {features: [{keyword: [movie]}], moments: [0.3], n: 1024, seed: 0}
      - forbid: {strings: [bad]}                               # prefix-aware constraints (SMC steers by them)
      - starts_with: {text: "Once upon a time"}

Each potential kind and its options come from the registry `bayeslm.modelling.potentials.POTENTIALS` (a new kind
is one new module there); rewards, predicates and features are specs of `bayeslm.modelling.rewards.from_spec`.
"""

from __future__ import annotations

import math
from pathlib import Path

from bayeslm.config import ConfigError, load_yaml, mapping_with
from bayeslm.distributions.loading import load_lm, resolve_source
from bayeslm.modelling.potentials import POTENTIALS
from bayeslm.modelling.potentials.base import Product
from bayeslm.modelling.prompts import MAX_NEW_TOKENS, TARGET_KEYS, read_prompts
from bayeslm.modelling.target import Target


def _number(where: str, value, *, positive: bool = False, integer: bool = False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected {'an integer' if integer else 'a finite number'}, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}")
    return value


def _relative_paths(args, base: Path):
    """The options as written, with each local classifier's path resolved against the file's directory."""
    if isinstance(args, dict):
        if isinstance(args.get("file"), str):  # a grammar's or a schema's file
            args = {**args, "file": str(base / args["file"])}
        if isinstance(args.get("classifier"), dict) and isinstance(args["classifier"].get("path"), str):
            return {**args, "classifier": {**args["classifier"], "path": str(base / args["classifier"]["path"])}}
        return {k: _relative_paths(v, base) for k, v in args.items()}
    if isinstance(args, list):
        return [_relative_paths(v, base) for v in args]
    return args


def _potential(where: str, entry, base: Path):
    """One potential from its kind's registry entry (`bayeslm.modelling.potentials`), every option checked; a kind
    that needs the prior (moments, fitted from its samples) comes back unbuilt, with a `build` for the target."""
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(f"{where}: expected a mapping with exactly one key among {POTENTIALS.names()}, got "
                          f"{entry!r}")
    (kind, args), = entry.items()
    if isinstance(args, dict) and isinstance(args.get("model"), (str, dict)):  # a teacher's directory
        args = {**args, "model": resolve_source(args["model"], base)}
    try:
        return POTENTIALS.build({kind: _relative_paths(args, base)}, where)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:  # a potential that cannot be made as written
        raise ConfigError(f"{where}.{kind}: {error}") from error


def _chat(chat, system: str | None):
    """The prior's `chat` setting: the file's `chat:` (true, false or {system: TEXT}; absent: the tokenizer
    decides), or the system message the prompts' conversations carry."""
    if chat is not None and not (isinstance(chat, bool) or (isinstance(chat, dict) and list(chat) == ["system"]
                                                             and isinstance(chat["system"], str))):
        raise ConfigError(f"chat: expected true, false or {{system: TEXT}}, got {chat!r}")
    if system is None:
        return chat
    if chat is False or (isinstance(chat, dict) and chat["system"] != system):
        raise ConfigError(f"chat: the prompts' conversations carry the system message {system!r}, which chat: "
                          f"{chat!r} contradicts; keep one of them")
    return {"system": system}


def parse_target(data, base: Path = Path("."), *, batch_size: int = 64, device: str | None = None,
                 decoding: str | None = None) -> Target:
    """A `Target` from the parsed YAML of a target file (relative paths resolve against `base`); its prior is
    loaded onto `device` and samples with `decoding` (see `load_lm`)."""
    mapping_with("target", data, {"prior", "potentials"}, TARGET_KEYS - {"prior", "potentials"})
    max_new_tokens = _number("max_new_tokens", data.get("max_new_tokens", MAX_NEW_TOKENS), positive=True, integer=True)
    prompts, system = read_prompts(data, base)
    chat = _chat(data.get("chat"), system)
    entries = data["potentials"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"potentials: expected a non-empty list, got {entries!r}")
    # Every potential is checked before the prior loads: a mistake in the file costs no model load.
    potentials = [_potential(f"potentials[{i}]", e, base) for i, e in enumerate(entries)]
    try:
        prior = load_lm(resolve_source(data["prior"], base), batch_size=batch_size, device=device,
                        decoding=decoding, chat=chat)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise ConfigError(f"prior: {error}") from error
    for i, built in enumerate(potentials):  # a kind that needs the prior is built for it; the others are themselves
        try:
            potentials[i] = built.build(prior, prompts, max_new_tokens)
        except ValueError as error:
            raise ConfigError(f"potentials[{i}].{built.name}: {error}") from error
    potential = potentials[0] if len(potentials) == 1 else Product(potentials)
    try:  # a prompt that cannot fit is a mistake in this file: say so now, not after minutes of sampling
        prior.check_fits(prompts, max_new_tokens)
    except ValueError as error:
        raise ConfigError(f"prompts: {error}") from None
    return Target(prior, potential, prompts, max_new_tokens)


def load_target(path: str | Path, *, batch_size: int = 64, device: str | None = None,
                decoding: str | None = None) -> Target:
    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read the target file {path} ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"the target file {path} is not UTF-8 text ({error}); re-save it as UTF-8") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return parse_target(data, path.parent, batch_size=batch_size, device=device, decoding=decoding)
