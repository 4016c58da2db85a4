"""Prompts from data files and datasets (Parquet, a saved dataset, `datasets.load_dataset`), and held-out
evaluation prompts for a run's final scorecard."""

import json

import pytest
from conftest import PROMPTS, config

from bayeslm.config import ConfigError
from bayeslm.modelling.prompts import read_prompts
from bayeslm.training.run import train

ROWS = {"id": [1, 2, 3], "question": ["the movie", "not good", ""]}


def test_a_parquet_file_gives_its_column(tmp_path):
    pyarrow, parquet = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    parquet.write_table(pyarrow.table(ROWS), tmp_path / "p.parquet")
    assert (read_prompts({"prompts_file": "p.parquet", "prompts_column": "question"}, tmp_path)
            == (ROWS["question"], None))
    with pytest.raises(ConfigError, match=r"has no column 'prompt' \(its columns: \['id', 'question'\]\)"):
        read_prompts({"prompts_file": "p.parquet"}, tmp_path)
    with pytest.raises(ConfigError, match="holds int values such as 1, not text"):
        read_prompts({"prompts_file": "p.parquet", "prompts_column": "id"}, tmp_path)


def test_a_saved_dataset_and_a_dataset_by_path_give_their_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict(ROWS).save_to_disk(str(tmp_path / "saved"))
    assert read_prompts({"prompts_file": "saved", "prompts_column": "question"}, tmp_path) == (ROWS["question"], None)
    (tmp_path / "data").mkdir()  # a local dataset of data files, loaded as load_dataset loads a Hub one
    (tmp_path / "data" / "test.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    spec = {"path": str(tmp_path / "data"), "split": "test"}
    assert read_prompts({"prompts_dataset": spec}, tmp_path) == (PROMPTS, None)
    with pytest.raises(ConfigError, match="prompts_dataset: cannot load .* split 'validation'"):
        read_prompts({"prompts_dataset": {**spec, "split": "validation"}}, tmp_path)
    with pytest.raises(ConfigError, match="give exactly one of"):
        read_prompts({"prompts": ["a"], "prompts_dataset": spec}, tmp_path)


def test_held_out_prompts_are_what_the_final_scorecard_measures(tmp_path):
    (tmp_path / "held_out.txt").write_text("good\nbad movie\nthe\n")
    run = tmp_path / "run"
    train(config(steps=1, eval_n=8, eval_prompts="held_out.txt"), run, base=tmp_path, quiet=True)
    card = json.loads((run / "scorecard.json").read_text())
    assert card["n"] == 3 * 8 and "3 prompt(s)" in card["target"]
    shown = {json.loads(line)["prompt"] for line in (run / "samples.jsonl").read_text().splitlines()}
    assert shown == {"good", "bad movie", "the"}
    with pytest.raises(ConfigError, match="eval_prompts.prompts_file: cannot read"):
        train(config(steps=1, eval_prompts="missing.txt"), tmp_path / "other", base=tmp_path, quiet=True)
    assert not (tmp_path / "other").exists()  # refused before anything was written
