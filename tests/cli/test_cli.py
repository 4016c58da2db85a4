"""`bayeslm evaluate` as a user runs it: target files, JSON, exact values, clear errors."""

import json
import subprocess
import sys

import pytest
import yaml
from conftest import run

KEYS = ["log_z", "elbo", "eubo", "kl_model_target", "kl_target_model", "tv_model_target", "kl_model_prior",
        "reward_mean", "target_reward_mean", "entropy"]
TOY = {"toy": {"seed": 0, "train_steps": 50}}


def write(tmp_path, data, name="target.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_evaluate_json_with_exact_values(tmp_path, capsys):
    target = write(tmp_path, {"prior": TOY, "prompts": ["", "the movie"], "max_new_tokens": 3,
                              "potentials": [{"exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5}}]})
    code, out, _ = run(capsys, "evaluate", "--target", target, "-n", "400", "--exact", "--json",
                       "--reference-source", "prior")
    assert code == 0
    card = json.loads(out)
    for key in KEYS:
        assert set(card[key]) == {"value", "stderr"}
        exact = card["exact"][key]
        assert abs(card[key]["value"] - exact) <= 3 * card[key]["stderr"] + 1e-9, key
    assert card["n"] == 800 and 0 < card["ess"] <= 800
    for key in ("distinct_1", "distinct_2", "distinct_3", "self_bleu"):
        assert 0 <= card[key] <= 1


def test_evaluate_table_for_a_moment_target(tmp_path, capsys):
    target = write(tmp_path, {"prior": TOY, "prompts": ["the"], "max_new_tokens": 3, "potentials": [
        {"moments": {"features": [{"keyword": ["movie"]}], "moments": [0.4], "n": 500}},
        {"constraint": {"predicate": "length", "at_least": 1}}]})
    code, out, _ = run(capsys, "evaluate", "--target", target, "-n", "200")
    assert code == 0
    assert "KL(q‖π*)" in out and "keyword:movie under π*" in out


def test_prompts_file_and_a_saved_model(tmp_path, capsys, prior):
    (tmp_path / "prompts.txt").write_text("the\n\nthe movie\n")
    prior.model.save_pretrained(tmp_path / "model")
    prior.tokenizer.save_pretrained(tmp_path / "model")
    target = write(tmp_path, {"prior": "model", "prompts_file": "prompts.txt", "max_new_tokens": 3,
                              "potentials": [{"exponential": {"reward": "length", "beta": 2}}]})
    code, out, _ = run(capsys, "evaluate", "--target", target, "--model", "toy", "-n", "50", "--json")
    assert code == 0
    card = json.loads(out)
    assert card["n"] == 100 and card["kl_model_prior"]["value"] > 0  # an untrained toy is far from the prior


@pytest.mark.parametrize("data, message", [
    ({"prior": TOY, "prompts": [""], "potentials": [{"exponential": {"reward": "length", "beta": -1}}]},
     "potentials[0].exponential.beta: must be > 0"),
    ({"prior": TOY, "prompts": [""], "potentials": [{"exponential": {"reward": "length", "bta": 1}}]},
     "potentials[0].exponential: unknown key(s) ['bta']"),
    ({"prior": TOY, "prompts": [""], "potentials": [{"exponential": {"reward": "happiness", "beta": 1}}]},
     "potentials[0].exponential.reward: unknown reward 'happiness'"),
    ({"prior": TOY, "prompts": [""], "potentials": [{"gaussian": {}}]},
     "potentials[0]: unknown potential 'gaussian'; expected one of best_of, constraint, exponential"),
    ({"prior": TOY, "prompts": [], "potentials": [{"exponential": {"reward": "length", "beta": 1}}]},
     "prompts: expected a non-empty list"),
    ({"prior": TOY, "prompts": [""], "max_new_tokens": "ten",
      "potentials": [{"exponential": {"reward": "length", "beta": 1}}]}, "max_new_tokens: expected an integer"),
    ({"prompts": [""], "potentials": []}, "missing required key(s) ['prior']"),
    ({"prior": "no/such/model", "prompts": [""], "potentials": [{"exponential": {"reward": "length", "beta": 1}}]},
     "no model at"),
    ({"prior": {"toy": {"sed": 1}}, "prompts": [""],
      "potentials": [{"exponential": {"reward": "length", "beta": 1}}]}, "unknown toy setting(s) ['sed']"),
    ({"prior": TOY, "prompts": ["the"], "max_new_tokens": 3,
      "potentials": [{"moments": {"features": [{"keyword": ["zebra"]}], "moments": [0.3], "n": 50}}]},
     "cannot fit the moment 0.3"),
])
def test_malformed_target_file_names_the_field(tmp_path, capsys, data, message):
    code, out, err = run(capsys, "evaluate", "--target", write(tmp_path, data))
    assert code == 2 and out == ""
    assert message in err


def test_non_utf8_prompt_file_is_a_config_error(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_bytes(b"caf\xe9\n")
    target = write(tmp_path, {"prior": TOY, "prompts_file": "prompts.txt",
                              "potentials": [{"exponential": {"reward": "length", "beta": 1}}]})
    code, _, err = run(capsys, "evaluate", "--target", target)
    assert code == 2 and "not UTF-8" in err


def test_no_satisfying_sample_is_a_runtime_error(tmp_path, capsys):
    target = write(tmp_path, {"prior": TOY, "prompts": ["the"], "max_new_tokens": 3,
                              "potentials": [{"constraint": {"predicate": {"regex": "zebra"}}}]})
    code, _, err = run(capsys, "evaluate", "--target", target, "-n", "20")
    assert code == 1 and "zero target weight" in err


def test_help_and_usage_errors():
    done = subprocess.run([sys.executable, "-m", "bayeslm", "evaluate", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "example:" in done.stdout
    done = subprocess.run([sys.executable, "-m", "bayeslm", "evaluate"], capture_output=True, text=True)
    assert done.returncode == 2 and "--target" in done.stderr
