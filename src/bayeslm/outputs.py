"""What bayeslm may write, checked without torch so that a refusal is instant and touches nothing.

bayeslm writes only into directories it owns: a run directory is a new or empty directory in which bayeslm left
its manifest (`MANIFEST`), and bayeslm writes there only the entries of `OWNED`. So `--overwrite` removes those
entries and nothing else (a directory that also holds files of the user's is refused), a non-empty directory
without a manifest is never a run, and one run lives in a directory unless told to resume or overwrite. An output
file (`sample --out`, `report --out`) may replace neither an input of its command nor an entry of a run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bayeslm.config import ConfigError


class RunExists(ConfigError):
    pass


MANIFEST = "bayeslm-run.json"
# Every entry bayeslm writes at the top of a run directory: training's, the evaluation's, the demo's, guard's.
OWNED = frozenset({"config.yaml", "target.yaml", "prompts.json", "metrics.jsonl", "checkpoints", "model", "adapter",
                   "model.writing", "adapter.writing", "scorecard.json", "scorecard_prior.json", "samples.jsonl",
                   "report.html", "plan.json", "reference.json", "tensorboard", "wandb", "mlruns", "guard.json",
                   "guard_samples.jsonl"})
# What a run that started training leaves: a directory holding any of these holds a run.
TRAINED = frozenset({"config.yaml", "metrics.jsonl", "checkpoints", "model", "adapter"})


def is_run_dir(path: Path) -> bool:
    """Whether bayeslm made `path` as a run directory (its manifest is there)."""
    return (path / MANIFEST).is_file()


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` is a run directory in which a run started (not one just made, e.g. by the demo's plan)."""
    return is_run_dir(run_dir) and any((run_dir / name).exists() for name in TRAINED)


def foreign(run_dir: Path) -> list[str]:
    """What a directory holds that bayeslm did not write there (everything, without a manifest)."""
    if not run_dir.is_dir():
        return []
    mine = OWNED | {MANIFEST} if is_run_dir(run_dir) else set()
    return sorted(entry.name for entry in run_dir.iterdir() if entry.name not in mine)


def _listing(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def refuse_other_run(run_dir: Path, *, resume: bool, overwrite: bool):
    """Refuses a run directory that is a file, a non-empty directory bayeslm did not make, two runs in one directory
    unless told to resume or overwrite, and an overwrite that would remove anything bayeslm did not write."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run directory: give --out a directory (new or a run's)")
    _writable(run_dir)
    others = foreign(run_dir)
    if others and not is_run_dir(run_dir):
        raise ConfigError(f"{run_dir} is not empty ({_listing(others)}) and is not a bayeslm run directory (it has no "
                          f"{MANIFEST}): give --out a new or empty directory, so that nothing of yours is replaced")
    if holds_run(run_dir) and not (resume or overwrite):
        raise RunExists(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if overwrite and others:
        raise ConfigError(f"--overwrite: {run_dir} also holds files bayeslm did not write ({_listing(others)}); "
                          "move them out, or give --out another directory. Nothing was removed")


def _writable(directory: Path):
    """Refuses a directory that cannot be made or written: its nearest existing ancestor is a file, or read-only."""
    existing = next(p for p in [directory, *directory.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot make {directory}: {existing} is a file, not a directory; give --out a path under a "
                          "directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in {existing} (permission denied); give --out a directory you can write to")


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool):
    """An empty run directory with its manifest (or the one to resume); `overwrite` removes what bayeslm wrote."""
    refuse_other_run(run_dir, resume=resume, overwrite=overwrite)
    if overwrite and run_dir.exists():
        for name in OWNED:
            entry = run_dir / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not is_run_dir(run_dir):
        (run_dir / MANIFEST).write_text(json.dumps({"bayeslm": "run directory", "owns": sorted(OWNED)}, indent=1))


def refuse_to_replace(out: Path, inputs: list[Path] = (), *, flag: str = "--out", owned: Path | None = None):
    """Refuses an output path that would replace an input of the command, a directory, or an entry of a run
    directory (but `owned`, the run's entry the command writes: a run's report.html); and one with no directory to
    go in. Checked before any work, so a refused command has touched nothing."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a directory; give the path of a file to write")
    if not out.resolve().parent.is_dir():
        raise ConfigError(f"{flag} {out}: the directory {out.resolve().parent} does not exist (or is a file); create "
                          "it first")
    if not os.access(out.resolve().parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ConfigError(f"{flag} {out}: permission denied; give a path you can write to")
    for source in inputs:
        if source is not None and Path(source).exists() and out.resolve() == Path(source).resolve():
            raise ConfigError(f"{flag} {out} is also an input of this command ({source}): writing it would replace "
                              "the input; give another path")
    if owned is not None and out.resolve() == Path(owned).resolve():
        return
    for parent in out.resolve().parents:
        entry = out.resolve().relative_to(parent).parts[0]
        if is_run_dir(parent) and entry in OWNED | {MANIFEST}:
            raise ConfigError(f"{flag} {out} is part of the run in {parent} ({entry}); writing it would damage the "
                              "run: give a path outside it")
