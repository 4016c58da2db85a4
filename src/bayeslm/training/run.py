"""A training run from start to end: its directory, its signals and resuming (`train`; the `Trainer` steps).

A run directory holds `config.yaml` (resolved), `metrics.jsonl` (one line per step), `checkpoints/`, `model/`
(the final model, a plain Hugging Face model with a model card, README.md), for a LoRA run `adapter/` (peft's
adapter, with its card; with `merge_lora: false` it is `model/`), `target.yaml` (the target as written) and the
evaluation (see `bayeslm.measurement.evaluation`): `scorecard.json`, `scorecard_prior.json`, `samples.jsonl`. Without a
directory (`out=None`) nothing is written and the run lives in the returned `Run` only.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

import yaml

from bayeslm.config import ConfigError, to_dict
from bayeslm.modelling.target import Target
from bayeslm.outputs import holds_run, prepare_run_dir, refuse_other_run
from bayeslm.parallel import distributed
from bayeslm.training.config import TrainConfig
from bayeslm.training.loop import Run, Trainer
from bayeslm.training.run_dir import target_definition
from bayeslm.training.setup import eval_prompts, resolve_model, resolve_target


def train(config: TrainConfig, out: Path | None, *, target: Target | None = None, base: Path = Path("."),
          resume: bool = False, overwrite: bool = False, quiet: bool = False, callbacks: list = ()) -> Run:
    """Trains per `config` towards `target` (default: the config's own `target:`, resolved against `base`) into the
    run directory `out` (None: nothing written). SIGINT and SIGTERM finish the current step, checkpoint it and
    raise `Interrupted`; `resume=True` continues exactly from there. Each of `callbacks`, `f(record, trainer)`, gets
    every step's figures (a dict, as metrics.jsonl holds them) and may return True to end training after that step.

    Launched with WORLD_SIZE > 1 (torchrun, accelerate launch), it trains data-parallel: see
    `bayeslm.parallel.distributed`."""
    if target is None and config.target is None:
        raise ConfigError("target: required but missing; add `target: ...` to the config (a target file or the "
                          "target inline), or pass a target built in Python")
    if out is None and resume:
        raise ConfigError("resume needs the run directory of the run to continue (out)")
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the directory and --overwrite deletes it: give one of them")
    if resume and not holds_run(out):
        raise ConfigError(f"{out} holds no run to resume; drop --resume to start one there")
    with distributed.joined() as world:
        return _train(config, out, target, world, base=base, resume=resume, overwrite=overwrite, quiet=quiet,
                      callbacks=callbacks)


def _train(config: TrainConfig, out: Path | None, target: Target | None, world: distributed.World, *, base: Path,
           resume: bool, overwrite: bool, quiet: bool, callbacks: list) -> Run:
    def start():  # rank 0 alone touches the run directory
        prepare_run_dir(out, resume=resume, overwrite=overwrite)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
        (out / "target.yaml").write_text(target_definition(config, base) if config.target is not None
                                          else f"# {target!r}\n")
        prior = trainer.target.prior  # what the prior is given for each prompt, template and system message included
        (out / "prompts.json").write_text(json.dumps(
            [{"prompt": p, "as_seen": seen} for p, seen in zip(trainer.target.prompts,
                                                               prior.render(trainer.target.prompts))], indent=1))

    if out is not None:
        refuse_other_run(out, resume=resume, overwrite=overwrite)
    config = resolve_model(config, base)
    if distributed.launched_with_fsdp() and config.sharding != "full":
        config = replace(config, sharding="full")  # what the launcher's FSDP config asks for, and what is saved
        if world.main and not quiet:
            print("bayeslm: accelerate launched with FSDP: training with sharding: full", file=sys.stderr)
    # The target and the model load before --overwrite deletes anything: a bad new config keeps the old run.
    held_out = eval_prompts(config, base)  # read before any model loads: a bad file fails fast
    trainer = Trainer.from_config(config, target or resolve_target(config, base), run_dir=out, quiet=quiet,
                                  world=world, callbacks=callbacks, eval_prompts=held_out)
    if resume:  # before anything is written: a refused resume leaves the run as it was
        trainer.resume()
    if out is not None:
        world.on_main(start)

    def stop(signum, frame):
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once (the last checkpoint stays)
        trainer.stop_requested = True
        print(f"\nbayeslm: {signal.Signals(signum).name} received: finishing this step, then checkpointing",
              file=sys.stderr)

    # Signal handlers can be set only from the main thread (a notebook's cell may run elsewhere).
    catch = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)} if catch else {}
    try:
        return trainer.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
