"""What every command shares: argument types and the flags that say where and how models run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bayeslm.config import ConfigError, seed_range

DECODINGS = ("eager", "compiled")  # as `bayeslm.distributions.lm.DECODINGS`, without importing torch


def seed_int(text: str) -> int:
    """--seed: an integer torch accepts as a seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    problem = seed_range(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}, got {value}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def floats(flag: str, text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def models_from(args) -> dict:
    """The keyword arguments that place a command's models: `load_target(..., **models_from(args))`."""
    return {"batch_size": args.batch_size, "device": args.device or args.env_device,
            "decoding": args.decoding or args.env_decoding}


def read_environment(args) -> None:
    """The defaults a user may set in the environment, read here and passed on as arguments (the library reads no
    setting from it): $BAYESLM_DEVICE for --device and $BAYESLM_DECODING for --decoding, as `env_device` and
    `env_decoding`. A flag wins over them, and so does a training config's own device or decoding."""
    args.env_device = os.environ.get("BAYESLM_DEVICE") or None
    args.env_decoding = os.environ.get("BAYESLM_DECODING") or None
    if args.env_decoding not in (None, *DECODINGS):
        raise ConfigError(f"$BAYESLM_DECODING is {args.env_decoding!r}: set it to one of {', '.join(DECODINGS)} or "
                          "unset it")


def parent_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or messages on stderr (errors and "
                                                              "warnings still go there)")
    common.add_argument("--device", help="where models run: auto (the GPU when torch sees one, else the CPU), cpu, "
                                         "cuda or cuda:N (default: $BAYESLM_DEVICE, else auto)")
    common.add_argument("--decoding", choices=DECODINGS,
                        help="how models sample, never what they draw: compiled decodes on a static KV cache with "
                             "one compiled graph per step, faster on a GPU after a compilation of tens of seconds "
                             "(default: $BAYESLM_DECODING, else eager)")
    return common


def subparser(sub, name: str, parents, help: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, parents=parents, help=help, epilog=example,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def preflight_target(args):
    """The --target file checked before torch is imported (`bayeslm.preflight`): evaluate, sample and plan."""
    from bayeslm.preflight import check_target_file

    check_target_file(Path(args.target), getattr(args, "n", None))


def masked_proposal(target, model):
    """--mask: `model` masked to the target's languages, or a clear error for a target without one."""
    from bayeslm.modelling.potentials.language import masked

    try:
        return masked(target, model)
    except ValueError as error:
        raise ConfigError(f"--mask: {error}") from None
