"""Prompts from data: a list in the file, or a column of a data file or dataset, read as data, never as raw lines.

    prompts: ["Write a review:"]            # the prompts themselves
    prompts_file: prompts.txt               # one a line (blank lines skipped)
    prompts_file: prompts.jsonl             # a string a line, or objects with the field prompts_column
    prompts_file: prompts.csv               # a header, and the column prompts_column
    prompts_file: prompts.parquet           # the column prompts_column (needs pyarrow)
    prompts_file: saved_dataset/            # a directory of `Dataset.save_to_disk` (needs datasets)
    prompts_dataset: {path: imdb, split: test}   # `datasets.load_dataset` (from its cache when offline)
    prompts_column: prompt                  # default "prompt"

A prompt may also be a conversation in the chat format of transformers and TRL, a list of messages
[{role: system, content: ...}, {role: user, content: ...}]: its user message is the prompt and its system message
the chat template's (every prompt must then have the same one, or none). Longer histories are refused.

Parquet and datasets are read by the libraries made for them (pyarrow, Hugging Face datasets), each optional:
`pip install bayeslm[data]`. The same keys give a training config's held-out evaluation prompts
(`eval_prompts`).
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
from pathlib import Path

from bayeslm.config import ConfigError

PROMPT_KEYS = ("prompts", "prompts_file", "prompts_dataset", "prompts_task", "prompts_column")
# Every key of a target file: its prompts' and these (here, where both the target file's loader and the check
# before torch can read them).
MAX_NEW_TOKENS = 32  # a target file's default
TARGET_KEYS = {"prior", "potentials", "max_new_tokens", "chat", *PROMPT_KEYS}
SOURCES = ("prompts", "prompts_file", "prompts_dataset", "prompts_task")


def read_prompts(data: dict, base: Path, where: str = "") -> tuple[list[str], str | None]:
    """The prompts a mapping with PROMPT_KEYS names (relative paths resolve against `base`), and the system message
    their conversations share (None when they are plain text or have none); `where` prefixes the keys in errors
    (e.g. "eval_prompts.")."""
    return conversations(_values(data, base, where), where)


def conversations(values: list, where: str = "") -> tuple[list[str], str | None]:
    """Plain prompts as they are; conversations [system?, user] as their user message, with their shared system
    message."""
    texts, systems = [], set()
    for value in values:
        if isinstance(value, str):
            texts.append(value)
            systems.add(None)
            continue
        roles = [m.get("role") if isinstance(m, dict) else None for m in value]
        if roles not in (["user"], ["system", "user"]) or not all(isinstance(m.get("content"), str) for m in value):
            raise ConfigError(f"{where}prompts: a conversation prompt must be [{{role: system, content: ...}}, "
                              f"{{role: user, content: ...}}] (the system message optional), got {value!r}; longer "
                              "histories are not supported")
        texts.append(value[-1]["content"])
        systems.add(value[0]["content"] if roles[0] == "system" else None)
    if len(systems) > 1:
        raise ConfigError(f"{where}prompts: every prompt must have the same system message (or none), found "
                          f"{sorted(systems, key=str)}; split them into separate targets")
    return texts, next(iter(systems))


def _values(data: dict, base: Path, where: str) -> list:
    given = [key for key in SOURCES if key in data]
    if len(given) != 1:
        raise ConfigError(f"{where}prompts: give exactly one of 'prompts' (a list of strings), 'prompts_file' (a "
                          f"path), 'prompts_dataset' (a dataset) or 'prompts_task' (a shipped task); got "
                          f"{given or 'none'}")
    if "prompts_task" in data:
        from bayeslm.modelling.tasks import task_prompts

        return task_prompts(data["prompts_task"], where)
    column = data.get("prompts_column", "prompt")
    if not isinstance(column, str):
        raise ConfigError(f"{where}prompts_column: expected a column name, got {column!r}")
    if "prompts" in data:
        prompts = data["prompts"]
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, (str, list)) for p in prompts):
            raise ConfigError(f"{where}prompts: expected a non-empty list of strings (or conversations), got "
                              f"{prompts!r}; write e.g. prompts: [\"Write a review:\"], or prompts: [\"\"] for "
                              "unconditional generation")
        return prompts
    if "prompts_dataset" in data:
        prompts, origin = _dataset(data["prompts_dataset"], column, where), "prompts_dataset"
    else:
        path = base / str(data["prompts_file"])
        prompts, origin = _file(path, column, where), str(path)
    if not prompts:
        key = "prompts_dataset" if origin == "prompts_dataset" else "prompts_file"
        how = " (one prompt a line)" if origin.endswith(".txt") else ""
        raise ConfigError(f"{where}{key}: {origin} holds no prompt{how}; add at least one")
    bad = next((p for p in prompts if not isinstance(p, (str, list))), None)
    if bad is not None:
        raise ConfigError(f"{where}prompts_column: {column!r} of {origin} holds {type(bad).__name__} values such as "
                          f"{bad!r}, not text; name the column of prompts")
    return prompts


def _file(path: Path, column: str, where: str) -> list:
    if path.is_dir():
        datasets = _need("datasets", where)
        try:
            saved = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError, OSError) as error:
            raise ConfigError(f"{where}prompts_file: {path} is a directory but not a dataset saved with "
                              f"Dataset.save_to_disk ({type(error).__name__}: {error}); give a file of prompts, or "
                              "that directory") from None
        return _column(saved, column, str(path), where)
    if path.suffix == ".parquet":
        pyarrow_parquet = _need("pyarrow", where, module="pyarrow.parquet")
        try:
            table = pyarrow_parquet.read_table(path)
        except OSError as error:
            raise ConfigError(f"{where}prompts_file: cannot read {path} as Parquet ({error})") from None
        if column not in table.column_names:
            raise ConfigError(f"{where}prompts_file: {path} has no column {column!r} (its columns: "
                              f"{table.column_names}); name the prompts' column with prompts_column")
        return table.column(column).to_pylist()
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except OSError as error:
        raise ConfigError(f"{where}prompts_file: cannot read {path} ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where}prompts_file: {path} is not UTF-8 text ({error}); re-save it as UTF-8") from None
    if path.suffix == ".csv":
        rows = list(csv.DictReader(lines))
        if rows and column not in rows[0]:
            raise ConfigError(f"{where}prompts_file: {path} has no column {column!r} (its columns: {list(rows[0])}); "
                              "name the prompts' column with prompts_column")
        return [row[column] for row in rows]
    if path.suffix == ".jsonl":
        return _json_lines(path, lines, column, where)
    return [line for line in lines if line.strip()]


def _json_lines(path: Path, lines: list[str], column: str, where: str) -> list[str]:
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{where}prompts_file: {path} line {number} is not JSON ({error})") from None
        value = record.get(column) if isinstance(record, dict) else record
        if not isinstance(value, (str, list)):
            raise ConfigError(f"{where}prompts_file: {path} line {number} holds no prompt: expected a string or an "
                              f"object with the field {column!r} (prompts_column), got {line[:80]!r}")
        prompts.append(value)
    return prompts


def _dataset(spec, column: str, where: str) -> list:
    """`datasets.load_dataset(path, name, split=split)`: a Hub dataset from its cache (downloaded only when the
    network is allowed, as the datasets library decides), or a local dataset script or data directory."""
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or set(spec) - {"path", "name", "split"}:
        raise ConfigError(f"{where}prompts_dataset: expected {{path: DATASET, split: SPLIT, name: CONFIG}} (split "
                          f"default train, name optional), got {spec!r}")
    datasets = _need("datasets", where)
    split = spec.get("split", "train")
    try:
        dataset = datasets.load_dataset(spec["path"], spec.get("name"), split=split)
    except Exception as error:  # noqa: BLE001 - not found, not cached offline, no such split: said the same way
        raise ConfigError(f"{where}prompts_dataset: cannot load {spec['path']!r} split {split!r} "
                          f"({type(error).__name__}: {error})") from None
    return _column(dataset, column, spec["path"], where)


def _column(dataset, column: str, origin: str, where: str) -> list:
    if hasattr(dataset, "keys") and not hasattr(dataset, "column_names"):  # a DatasetDict: one split is needed
        raise ConfigError(f"{where}prompts_file: {origin} holds the splits {list(dataset.keys())}; give one split's "
                          "directory (e.g. .../train) or use prompts_dataset with split")
    if column not in dataset.column_names:
        raise ConfigError(f"{where}prompts: {origin} has no column {column!r} (its columns: {dataset.column_names}); "
                          "name the prompts' column with prompts_column")
    return list(dataset[column])


def _need(package: str, where: str, *, module: str | None = None):
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"{where}prompts: reading this needs {package}: pip install {package} (or bayeslm[data])")
    return importlib.import_module(module or package)
