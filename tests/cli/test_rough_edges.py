"""Rough edges found by trying bayeslm as a new user would: each stops with a message that names what is wrong,
the right exit code, and nothing lost."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import run, snapshot, write

TOY = {"toy": {"seed": 0}}
NOTHING = [{"constraint": {"predicate": {"keyword": ["zebra"]}}}]  # no toy word: nothing satisfies it
SAMPLERS = [("ancestral", []), ("importance", []), ("sir", []), ("rejection", ["--budget", "40"]),
            ("qrs", ["--qrs-beta", "1", "--budget", "40"]), ("imh", []), ("smc", []), ("best-of-n", [])]


def target(tmp_path, name="target.yaml", **fields) -> str:
    data = {"prior": TOY, "prompts": ["the"], "max_new_tokens": 3,
            "potentials": [{"exponential": {"reward": "length", "beta": 1}}], **fields}
    return write(tmp_path / name, data)


@pytest.mark.parametrize("method, extra", SAMPLERS, ids=[m for m, _ in SAMPLERS])
def test_a_target_nothing_satisfies_fails_every_sampler_and_keeps_the_old_samples(tmp_path, capsys, method, extra):
    out = tmp_path / "samples.jsonl"
    out.write_text('{"earlier": "samples"}\n')
    code, stdout, err = run(capsys, "sample", "--target", target(tmp_path, potentials=NOTHING), "--method", method,
                            "-n", 4, "--out", out, "--quiet", *extra)
    # One rule and one message, whichever sampler: `ScoredSamples.require_support`.
    assert code == 1 and "for prompt(s) ['the'] (no sample satisfies the constraints of the target)" in err
    assert out.read_text() == '{"earlier": "samples"}\n' and not Path(str(out) + ".partial").exists()


def test_evaluate_follows_the_same_rule(tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=NOTHING), "-n", 4, "--quiet")
    assert code == 1 and "zero target weight for prompt(s) ['the']" in err


def train_config(tmp_path, **fields) -> str:
    data = {"target": Path(target(tmp_path)).name, "objective": "klrl", "steps": 2, "prompts_per_step": 1,
            "samples_per_prompt": 2, "eval_n": 0, "checkpoint_every": 1, **fields}
    return write(tmp_path / "train.yaml", data)


@pytest.fixture
def finished(tmp_path, capsys) -> Path:
    run_dir = tmp_path / "run"
    assert run(capsys, "train", train_config(tmp_path), "--out", run_dir, "--quiet")[0] == 0
    return run_dir


def test_resume_and_overwrite_together_are_refused_and_the_run_kept(tmp_path, capsys, finished):
    before = snapshot(finished)
    code, _, err = run(capsys, "train", train_config(tmp_path), "--out", finished, "--resume", "--overwrite")
    assert code == 2 and "give one of them" in err and snapshot(finished) == before


def test_a_refused_resume_leaves_the_runs_config_as_it_was(tmp_path, capsys, finished):
    before = snapshot(finished)
    code, _, err = run(capsys, "train", train_config(tmp_path, lr=0.5), "--out", finished, "--resume", "--quiet")
    assert code == 2 and "['lr'] changed since the checkpoint" in err and snapshot(finished) == before


def test_resuming_towards_an_edited_target_is_refused_naming_the_change(tmp_path, capsys, finished):
    before = snapshot(finished)
    config = train_config(tmp_path)
    target(tmp_path, potentials=[{"exponential": {"reward": "length", "beta": 2}}])  # the file the config names
    code, _, err = run(capsys, "train", config, "--out", finished, "--resume", "--quiet")
    assert code == 2 and "towards a different target: potential was 'Exponential(length, beta=1.0)'" in err
    assert snapshot(finished) == before


def test_resume_in_a_directory_without_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "train", train_config(tmp_path), "--out", tmp_path / "empty", "--resume")
    assert code == 2 and "holds no run to resume; drop --resume" in err


def test_out_that_is_a_file_or_a_directory_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "a-file").write_text("mine")
    code, _, err = run(capsys, "train", train_config(tmp_path), "--out", tmp_path / "a-file")
    assert code == 2 and "is a file, not a run directory" in err and (tmp_path / "a-file").read_text() == "mine"
    code, _, err = run(capsys, "sample", "--target", target(tmp_path), "--method", "ancestral", "--out", tmp_path)
    assert code == 2 and "is a directory" in err


@pytest.mark.parametrize("prompt, message", [
    ("the zebra", "words outside the vocabulary of toy: ['zebra']"),
    ("the <eos> movie", "contains '<eos>', a special token of toy"),
])
def test_a_prompt_the_tokenizer_would_change_is_refused(tmp_path, capsys, prompt, message):
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, prompts=[prompt]), "-n", 2)
    assert code == 2 and message in err


def test_a_key_given_twice_is_an_error_naming_it(tmp_path, capsys):
    path = tmp_path / "target.yaml"
    path.write_text("prior: {toy: {seed: 0}}\nprompts: [the]\nmax_new_tokens: 3\nmax_new_tokens: 4\n"
                    "potentials: [{exponential: {reward: length, beta: 1}}]\n")
    code, _, err = run(capsys, "evaluate", "--target", path, "-n", 2)
    assert code == 2 and "the key 'max_new_tokens' is given twice (line 4)" in err
    config = Path(train_config(tmp_path))
    config.write_text(config.read_text() + "steps: 3\n")
    code, _, err = run(capsys, "train", config, "--out", tmp_path / "run")
    assert code == 2 and "the key 'steps' is given twice" in err


@pytest.mark.parametrize("potential, message", [
    ({"exponential": {"reward": "length", "beta": ".inf"}}, "beta: expected a finite number, got inf"),
    ({"exponential_family": {"features": ["length"], "coefficients": [".nan"]}},
     "coefficients[0]: expected a finite number, got nan"),
    ({"constraint": {"predicate": "length", "at_most": ".nan"}}, "at_most: expected a finite number, got nan"),
])
def test_non_finite_numbers_are_refused_before_any_work(tmp_path, capsys, potential, message):
    path = tmp_path / "target.yaml"
    text = yaml.safe_dump({"prior": TOY, "prompts": ["the"], "potentials": [potential]})
    path.write_text(text.replace("'.inf'", ".inf").replace("'.nan'", ".nan"))
    code, _, err = run(capsys, "evaluate", "--target", path, "-n", 2)
    assert code == 2 and message in err


def test_numbers_are_read_as_people_write_them(tmp_path, capsys):
    code, out, _ = run(capsys, "train", train_config(tmp_path, steps=1), "--out", tmp_path / "run", "--set",
                       "lr=1e-3", "--quiet", "--json")
    assert code == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["lr"] == 0.001


@pytest.mark.parametrize("name, text, column", [
    ("prompts.jsonl", '{"prompt": "the movie", "id": 1}\n\n{"prompt": "not good", "id": 2}\n', None),
    ("prompts.jsonl", '"the movie"\n"not good"\n', None),
    ("prompts.csv", "id,question\n1,the movie\n2,not good\n", "question"),
])
def test_a_jsonl_or_csv_prompts_file_is_read_as_data(tmp_path, capsys, name, text, column):
    (tmp_path / name).write_text(text)
    fields = {"prompts_file": name, **({"prompts_column": column} if column else {})}
    data = {"prior": TOY, "max_new_tokens": 3, "potentials": [{"exponential": {"reward": "length", "beta": 1}}],
            **fields}
    code, out, _ = run(capsys, "evaluate", "--target", write(tmp_path / "target.yaml", data), "-n", 2, "--json",
                       "--quiet")
    assert code == 0 and "2 prompt(s)" in json.loads(out)["target"]


def test_a_prompts_file_without_the_column_says_which_columns_it_has(tmp_path, capsys):
    (tmp_path / "prompts.csv").write_text("id,question\n1,the movie\n")
    data = {"prior": TOY, "prompts_file": "prompts.csv", "potentials": [{"exponential": {"reward": "length",
                                                                                      "beta": 1}}]}
    code, _, err = run(capsys, "evaluate", "--target", write(tmp_path / "target.yaml", data), "-n", 2)
    assert code == 2 and "has no column 'prompt' (its columns: ['id', 'question'])" in err


def test_a_lora_run_saved_unmerged_evaluates_from_its_directory(tmp_path, capsys):
    config = train_config(tmp_path, lora={"r": 4}, merge_lora=False, lr=0.05, steps=3)
    assert run(capsys, "train", config, "--out", tmp_path / "run", "--quiet")[0] == 0
    model = tmp_path / "run" / "model"
    assert (model / "adapter_config.json").is_file() and not (model / "config.json").exists()
    code, out, err = run(capsys, "evaluate", "--target", tmp_path / "target.yaml", "--model", model, "-n", 8,
                         "--json", "--quiet")
    assert code == 0, err
    assert json.loads(out)["kl_model_prior"]["value"] > 0  # the adapter is on: the model is not its base
    (model / "bayeslm_base.json").unlink()
    code, _, err = run(capsys, "evaluate", "--target", tmp_path / "target.yaml", "--model", model, "-n", 8)
    assert code == 2 and "holds a LoRA adapter but not its base model" in err


@pytest.mark.parametrize("source, message", [
    ("def f(:\n", "failed while it was imported: SyntaxError: invalid syntax"),
    ("raise RuntimeError('no GPU here')\n", "failed while it was imported: RuntimeError: no GPU here"),
    ("g = 1\n", "has no 'f' for the reward"),
])
def test_a_reward_module_that_cannot_be_imported_is_a_config_error(tmp_path, capsys, monkeypatch, source, message):
    (tmp_path / "user_rewards.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run(capsys, "evaluate", "--target",
                       target(tmp_path, potentials=[{"exponential": {"reward": "user_rewards:f", "beta": 1}}]))
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("damage, message", [
    ("config", "config.json is not a readable JSON file"),
    ("truncate", "cannot be loaded (SafetensorError"),
    ("shape", "its weights do not have the shapes its config.json describes"),
])
def test_a_damaged_model_directory_is_a_config_error(tmp_path, capsys, damage, message):
    import bayeslm as bl

    model = bl.load_lm({"toy": {"seed": 0, "train_steps": 0}})
    path = tmp_path / "model"
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    if damage == "config":
        (path / "config.json").write_text("{not json")
    elif damage == "truncate":
        weights = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    else:
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "n_embd": 2 * config["n_embd"]}))
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path), "--model", path)
    assert code == 2 and message in err and "Traceback" not in err
