"""The `bayeslm` command line: one module per command (demo, evaluate, guard, plan, report, reproduce, sample,
train), each a serialisation of the Python API's calls; `common.py` holds what they share.

Exit codes: 0 success, 2 usage or config error, 1 runtime failure, 130 interrupted. Results go to stdout,
diagnostics to stderr. Settings reach the models as arguments (`--device`, `--decoding`); the environment
variables $BAYESLM_DEVICE and $BAYESLM_DECODING are defaults a user may set, read here (`common.read_environment`)
and passed on: the library itself reads no setting from the environment.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings

from bayeslm.cli import demo, evaluate, guard, plan, report, reproduce, sample, train
from bayeslm.cli.common import parent_parser, read_environment

COMMANDS = (evaluate, sample, plan, train, guard, reproduce, demo, report)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; the chosen `command` also gets its heavier flags (`add_options`: a sampler's
    options, read from the registry)."""
    parser = argparse.ArgumentParser(prog="bayeslm", description="Fine-tune and sample language models as "
                                     "Bayesian inference: state a target π* ∝ π0·φ, measure any model against it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [parent_parser()]
    for module in COMMANDS:
        chosen = module.add(sub, parents)
        if chosen.prog.split()[-1] == command and hasattr(module, "add_options"):
            module.add_options(chosen)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(next((a for a in argv if not a.startswith("-")), None)).parse_args(argv)
    from bayeslm import progress
    from bayeslm.config import ConfigError

    progress.quiet = args.quiet
    try:  # what can be checked without torch is checked first: a typo costs well under a second
        read_environment(args)
        if hasattr(args, "preflight"):
            args.preflight(args)
    except ConfigError as error:
        print(f"bayeslm: error: {error}", file=sys.stderr)
        return 2
    # Deprecation notices from inside transformers (peft calls them) are for library authors, not our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # stderr is for diagnostics, not weight-loading bars
    from bayeslm.distributions.loading import ModelNotFound, resolve_device
    from bayeslm.modelling.rewards import RewardError
    from bayeslm.training.checkpoint import CheckpointError
    from bayeslm.training.objectives.log_z import NoTargetMass
    from bayeslm.training.stepper import TrainingDiverged
    from bayeslm.weights import NoSupport

    if threading.current_thread() is threading.main_thread():  # handlers can be set only there
        signal.signal(signal.SIGTERM, _terminated)
    try:
        if args.device or args.env_device:
            resolve_device(args.device or args.env_device)  # a wrong device fails now, before any model loads
        return args.run(args)
    except (ConfigError, ModelNotFound) as error:
        print(f"bayeslm: error: {error}", file=sys.stderr)
        return 2
    except (RewardError, NoSupport, NoTargetMass, CheckpointError, TrainingDiverged, ValueError) as error:
        print(f"bayeslm: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Terminated:
        print("bayeslm: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt as interrupt:
        print(f"bayeslm: interrupted{': ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
        return 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that its clean-up runs as for Ctrl-C (a side file removed, an
    output left as it was) instead of the process vanishing mid-write."""


def _terminated(signum, frame):
    raise Terminated


if __name__ == "__main__":
    sys.exit(main())
