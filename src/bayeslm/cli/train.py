"""`bayeslm train`: the YAML config is a serialisation of `bl.train`; this loads it and makes that call."""

from __future__ import annotations

import json
from pathlib import Path

from bayeslm.cli.common import subparser
from bayeslm.config import ConfigError, load_yaml, override

EXAMPLE = """example:
  bayeslm train examples/train_klrl_sentiment.yaml --out runs/klrl
  bayeslm train examples/train_klrl_sentiment.yaml --out runs/klrl --set steps=20 --set objective.klrl.kl=k3
  bayeslm train examples/train_klrl_sentiment.yaml --out runs/klrl --resume"""


def add(sub, parents):
    parser = subparser(sub, "train", parents, "fine-tune a model towards a target (any registered objective, or "
                                              "your own)", EXAMPLE)
    parser.add_argument("config", help="training config (YAML); every key is documented in docs/config.md")
    parser.add_argument("--out", required=True, help="run directory to write")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set objective.klrl.clip=0.2 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--json", action="store_true", help="print the final scorecard as JSON")
    parser.set_defaults(run=run, preflight=preflight)
    return parser


def load_data(path: Path, assignments: list[str]) -> dict:
    """The config's YAML data with the --set overrides applied."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the config {path}: {error}") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    for assignment in assignments:
        override(data, assignment)
    return data


def run(args) -> int:
    from bayeslm.training.config import load_config
    from bayeslm.training.run import train

    path = Path(args.config)
    data = load_data(path, args.set)
    # A flag wins over the config, the config over the environment ($BAYESLM_DEVICE stands in for device: auto).
    if args.device:
        data["device"] = args.device
    elif args.env_device and data.get("device", "auto") == "auto":
        data["device"] = args.env_device
    if args.decoding:
        data["decoding"] = args.decoding
    elif args.env_decoding:
        data.setdefault("decoding", args.env_decoding)
    result = train(load_config(data), Path(args.out), base=path.parent, resume=args.resume,
                   overwrite=args.overwrite, quiet=args.quiet)
    card = result.scorecard.to_json() if result.scorecard is not None else {}
    if args.json:
        print(json.dumps({"run": args.out, "scorecard": card}, indent=2))
        return 0
    print(f"run written to {args.out} (model in {args.out}/model)")
    for key in ("reward_mean", "kl_model_prior", "kl_model_target", "kl_target_model", "entropy"):
        if key in card and card[key]["value"] is not None:
            print(f"  {key:18s} {card[key]['value']:.4f} ± {card[key]['stderr']:.4f}")
    return 0


def preflight(args):
    """The config (with --set) and its target checked before torch is imported (`bayeslm.preflight`)."""
    from bayeslm.preflight import check_train

    check_train(load_data(Path(args.config), args.set), Path(args.config).parent)
