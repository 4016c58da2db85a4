"""Every bad input stops with a message that says what is wrong and how to fix it, the right exit code (2 for a
usage or config error, 1 for a failure at run time), and leaves earlier output as it was."""

import json
import math
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run, snapshot, write

from bayeslm.cli import main
from bayeslm.distributions.loading import load_lm
from bayeslm.modelling.potentials import Exponential
from bayeslm.modelling.rewards import length

TOY = {"toy": {"seed": 0}}  # untrained: these tests need a model, not a good one
LENGTH = [{"exponential": {"reward": "length", "beta": 1}}]


@pytest.fixture(autouse=True)
def fixtures_importable(monkeypatch):
    """`reward_fixtures` (next to this file) is importable by dotted path, as a user's own module would be."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))


def target(tmp_path, name="target.yaml", **fields) -> str:
    data = {"prior": TOY, "prompts": ["the"], "max_new_tokens": 3, "potentials": LENGTH, **fields}
    return write(tmp_path / name, {k: v for k, v in data.items() if v is not None})


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A run directory as an earlier `bayeslm train` left it."""
    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "bayeslm-run.json").write_text('{"bayeslm": "run directory"}')
    (run_dir / "config.yaml").write_text("objective: klrl\n")
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (run_dir / "model" / "model.safetensors").write_bytes(b"weights of the earlier run")
    return run_dir


def train_config(tmp_path, **fields) -> str:
    data = {"target": Path(target(tmp_path)).name, "objective": "dpg", "steps": 1, "prompts_per_step": 1,
            "samples_per_prompt": 2, "eval_n": 0, **fields}
    return write(tmp_path / "train.yaml", {k: v for k, v in data.items() if v is not None})


# ----- config keys: unknown, missing, ill-typed ----------------------------------------------------------------

@pytest.mark.parametrize("fields, message", [
    ({"stpes": 3}, ["unknown key(s) ['stpes']", "did you mean 'steps'", "allowed keys"]),
    ({"target": None}, ["target: required but missing", "add `target: ...`"]),
    ({"steps": "ten"}, ["steps: expected an integer, got 'ten'"]),
    ({"lr": "fast"}, ["lr: expected a number, got 'fast'"]),
    ({"objective": "ppo"}, ["objective: unknown objective 'ppo'; expected one of dpg, fdpg, klrl, rl"]),
    ({"lora": {"rank": 4}}, ["lora: unknown key(s) ['rank']", "allowed keys: ['alpha', 'r', 'target_modules']"]),
    ({"steps": 0}, ["steps: must be > 0, got 0"]),
    ({"samples_per_prompt": 1}, ["samples_per_prompt: must be >= 2"]),
])
def test_bad_train_config_is_a_config_error_and_keeps_the_old_run(tmp_path, capsys, old_run, fields, message):
    before = snapshot(old_run)
    code, out, err = run(capsys, "train", train_config(tmp_path, **fields), "--out", old_run, "--overwrite")
    assert code == 2 and out == ""
    for part in message:
        assert part in err
    assert snapshot(old_run) == before


def test_bad_set_override_names_the_key(tmp_path, capsys, old_run):
    code, _, err = run(capsys, "train", train_config(tmp_path), "--out", old_run, "--overwrite", "--set", "lr=-1")
    assert code == 2 and "lr: must be > 0, got -1" in err
    code, _, err = run(capsys, "train", train_config(tmp_path), "--out", old_run, "--set", "steps")
    assert code == 2 and "expected KEY=VALUE, e.g. --set" in err


@pytest.mark.parametrize("fields, message", [
    ({"promts": ["the"]}, ["unknown key(s) ['promts']", "did you mean 'prompts'", "allowed keys"]),
    ({"potentials": None}, ["missing required key(s) ['potentials']; add them"]),
    ({"max_new_tokens": "ten"}, ["max_new_tokens: expected an integer, got 'ten'"]),
    ({"max_new_tokens": 0}, ["max_new_tokens: must be > 0, got 0"]),
    ({"potentials": [{"exponential": {"reward": "length", "bta": 1}}]},
     ["potentials[0].exponential: unknown key(s) ['bta']", "did you mean 'beta'"]),
    ({"potentials": [{"exponential": {"reward": "length", "beta": "high"}}]},
     ["potentials[0].exponential.beta: expected a number, got 'high'"]),
    ({"potentials": [{"constraint": {"predicate": "length", "at_least": 3, "at_most": 1}}]},
     ["at_least 3 > at_most 1"]),
    ({"prior": {"toy": {"sed": 1}}}, ["unknown toy setting(s) ['sed']"]),
    ({"prior": {"path": 3}}, ["prior: a model given by path must be {path: DIR, trust_remote_code: true/false}"]),
])
def test_bad_target_file_is_a_config_error(tmp_path, capsys, fields, message):
    code, out, err = run(capsys, "evaluate", "--target", target(tmp_path, **fields), "-n", 4)
    assert code == 2 and out == ""
    for part in message:
        assert part in err


# ----- beta <= 0, n <= 0 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0, -1, -0.5])
def test_non_positive_beta_is_refused(tmp_path, capsys, beta):
    potentials = [{"exponential": {"reward": "length", "beta": beta}}]
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=potentials))
    assert code == 2 and f"potentials[0].exponential.beta: must be > 0, got {beta}" in err
    with pytest.raises(ValueError, match="beta must be > 0"):
        Exponential(length(), beta=beta)


@pytest.mark.parametrize("argv", [["evaluate", "-n", "0"], ["sample", "--method", "ancestral", "-n", "-3"],
                                  ["plan", "-n", "0"], ["evaluate", "-n", "many"]])
def test_non_positive_n_is_a_usage_error(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit:
        main([argv[0], "--target", target(tmp_path), *argv[1:]])
    assert exit.value.code == 2
    assert "-n: " in capsys.readouterr().err


def test_non_positive_moment_sample_count_and_plan_betas(tmp_path, capsys):
    moments = [{"moments": {"features": ["length"], "moments": [1.0], "n": 0}}]
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=moments))
    assert code == 2 and "potentials[0].moments.n: must be > 0, got 0" in err
    code, _, err = run(capsys, "plan", "--target", target(tmp_path), "--betas", "0.1,0")
    assert code == 2 and "--betas: every beta must be > 0" in err


def test_sampling_zero_continuations_is_refused(prior):
    with pytest.raises(ValueError, match="n and max_new_tokens must be >= 1"):
        prior.sample(["the"], n=0)


# ----- prompts -------------------------------------------------------------------------------------------------

def test_empty_prompt_list_is_refused(tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, prompts=[]))
    assert code == 2 and "prompts: expected a non-empty list of strings" in err


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_empty_prompts_file_is_refused(tmp_path, capsys, text):
    (tmp_path / "prompts.txt").write_text(text)
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, prompts=None, prompts_file="prompts.txt"))
    assert code == 2 and "prompts.txt holds no prompt (one prompt a line)" in err


def test_missing_prompts_file_is_refused(tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, prompts=None, prompts_file="nope.txt"))
    assert code == 2 and "prompts_file: cannot read" in err and "nope.txt" in err


def test_non_utf8_prompt_file_is_refused(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_bytes(b"the caf\xe9 movie\n")
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, prompts=None, prompts_file="prompts.txt"))
    assert code == 2 and "is not UTF-8 text" in err and "re-save it as UTF-8" in err


def test_non_utf8_target_file_is_refused(tmp_path, capsys):
    path = tmp_path / "target.yaml"
    path.write_bytes(b"prior: toy\nprompts: ['caf\xe9']\n")
    code, _, err = run(capsys, "evaluate", "--target", path)
    assert code == 2 and "is not UTF-8 text" in err and "re-save it as UTF-8" in err


def test_prompt_longer_than_the_context_is_refused_before_sampling(tmp_path, capsys):
    """The toy prior has a context of 32 tokens: BOS + 40 words cannot fit, let alone 3 more."""
    out = tmp_path / "samples.jsonl"
    out.write_text("earlier samples\n")
    long_prompt = " ".join(["the"] * 40)
    code, _, err = run(capsys, "sample", "--target", target(tmp_path, prompts=["the", long_prompt]),
                       "--method", "ancestral", "-n", 2, "--out", out)
    assert code == 2
    assert "prompts: prompt 1 ('the the the" in err and "is 41 tokens" in err and "(32 tokens)" in err
    assert "shorten the prompt to at most 29 tokens or lower max_new_tokens" in err
    assert out.read_text() == "earlier samples\n"


def test_max_new_tokens_beyond_the_context_is_refused(tmp_path, capsys, prior):
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, max_new_tokens=40))
    assert code == 2 and "lower max_new_tokens below 32" in err
    with pytest.raises(ValueError, match="exceeds the context"):
        prior.sample([" ".join(["good"] * 30)], n=1, max_new_tokens=4)


# ----- rewards that misbehave ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fn, message", [
    ("reward_fixtures:raises", ["reward 'reward_fixtures:raises' raised ZeroDivisionError", "on the text",
                                "fix the function so that it returns a float for every text"]),
    ("reward_fixtures:nan", ["reward 'reward_fixtures:nan' returned nan for the text", "must be finite numbers"]),
    ("reward_fixtures:inf", ["reward 'reward_fixtures:inf' returned -inf", "must be finite numbers"]),
    ("reward_fixtures:too_few", ["returned 3 values for 4 texts", "exactly one float per text"]),
])
def test_misbehaving_reward_is_a_runtime_error_and_keeps_old_samples(tmp_path, capsys, fn, message):
    out = tmp_path / "samples.jsonl"
    out.write_text("earlier samples\n")
    potentials = [{"exponential": {"reward": {"function": fn}, "beta": 1}}]
    code, stdout, err = run(capsys, "sample", "--target", target(tmp_path, potentials=potentials),
                            "--method", "ancestral", "-n", 4, "--out", out)
    assert code == 1 and stdout == ""
    for part in message:
        assert part in err
    assert out.read_text() == "earlier samples\n"
    assert not Path(str(out) + ".partial").exists()
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=potentials), "-n", 4)
    assert code == 1 and message[0] in err


@pytest.mark.parametrize("spec, message", [
    ({"function": "no_such_package.rewards:score"},
     ["cannot import the reward function 'no_such_package.rewards:score'", "No module named 'no_such_package'",
      "install the package that holds it or add its directory to PYTHONPATH"]),
    ({"function": "reward_fixtures:missing"}, ["the module 'reward_fixtures' has no 'missing'"]),
    ({"function": "reward_fixtures:not_a_function"}, ["is not a bayeslm reward function: it is a float"]),
    ({"classifier": {"path": "no/such/classifier"}}, ["no classifier at", "no/such/classifier",
                                                      "models are never downloaded"]),
])
def test_missing_reward_code_or_model_is_a_config_error(tmp_path, capsys, spec, message):
    potentials = [{"exponential": {"reward": spec, "beta": 1}}]
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=potentials))
    assert code == 2
    assert "potentials[0].exponential.reward: " in err
    for part in message:
        assert part in err


def test_builtin_reward_without_its_package_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)  # `import vaderSentiment` now raises ImportError
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    potentials = [{"exponential": {"reward": "sentiment", "beta": 1}}]
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=potentials))
    assert code == 2 and "the reward 'sentiment' needs the package 'vaderSentiment'" in err
    assert "pip install vaderSentiment" in err


# ----- a constraint no sample satisfies ------------------------------------------------------------------------

ZEBRA = [{"constraint": {"predicate": {"regex": "zebra"}}}]


def test_unsatisfiable_constraint_stops_evaluate(tmp_path, capsys):
    code, out, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=ZEBRA), "-n", 16)
    assert code == 1 and out == ""
    assert "all 16 samples have zero target weight" in err and "no sample satisfies the constraints" in err
    assert "Draw more samples (-n), or use a proposal closer to the target" in err


@pytest.mark.parametrize("objective, message", [
    ("dpg", "none of 256 samples so far has non-zero target weight for prompt(s) ['the']"),
    ("klrl", "Use the dpg objective (forward KL) for constraint targets"),
])
def test_unsatisfiable_constraint_stops_training(tmp_path, capsys, objective, message):
    config = train_config(tmp_path, objective=objective, samples_per_prompt=128, steps=3)
    write(tmp_path / "target.yaml", yaml.safe_load(Path(target(tmp_path, potentials=ZEBRA)).read_text()))
    code, _, err = run(capsys, "train", config, "--out", tmp_path / "run", "--quiet")
    assert code == 1 and message in err
    assert not (tmp_path / "run" / "model").exists()
    if objective == "dpg":  # the first step's 128 samples met nothing and went on; the second's made 256
        assert "no sample yet satisfies the target for prompt(s) ['the']" in err


def test_a_final_evaluation_that_meets_the_constraint_nowhere_warns_and_keeps_the_run(tmp_path, capsys):
    """A model trained briefly towards a rare constraint may meet it in none of its final samples: the run still
    completes (model saved, no scorecard), with a warning that says why."""
    from bayeslm.measurement.evaluation import evaluate
    from bayeslm.modelling.target_file import load_target

    zebra = load_target(target(tmp_path, potentials=ZEBRA))
    assert evaluate(zebra.prior, zebra, 4, seed=0, run_dir=tmp_path) is None
    err = capsys.readouterr().err
    assert "the model is not scored against the target: all 4 samples have zero target weight" in err
    assert not (tmp_path / "scorecard.json").exists() and (tmp_path / "samples.jsonl").read_text() == ""


# ----- models: missing, pickled, without EOS, with their own code -----------------------------------------------

def save_toy(directory: Path, prior) -> Path:
    prior.model.save_pretrained(directory)
    prior.tokenizer.save_pretrained(directory)
    return directory


def test_missing_model_directory_is_a_config_error(tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, prior="no/such/model"))
    assert code == 2 and "prior: no model at" in err and "save one with model.save_pretrained(path)" in err
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path), "--model", tmp_path / "nothing")
    assert code == 2 and "no model at" in err


def test_tokenizer_without_eos_is_refused(tmp_path, capsys, prior):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    directory = tmp_path / "no-eos"
    prior.model.save_pretrained(directory)
    vocab = {w: i for i, w in enumerate(["<unk>", "<bos>", "good", "bad", "movie", "the", "very", "not"])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<bos>").save_pretrained(directory)
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, prior="no-eos"))
    assert code == 2 and "has no EOS token" in err and "tokenizer.eos_token = " in err


def test_pickled_weights_are_refused(tmp_path, capsys, prior):
    import torch

    directory = save_toy(tmp_path / "pickled", prior)
    (directory / "model.safetensors").unlink()
    torch.save(prior.model.state_dict(), directory / "pytorch_model.bin")  # a pickle can run code when loaded
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, prior="pickled"))
    assert code == 2 and "holds no .safetensors weights" in err and "safe_serialization=True" in err


@pytest.fixture
def custom_code_model(tmp_path, prior, monkeypatch) -> Path:
    """A model directory whose config.json points at Python code shipped beside the weights."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # trusted code is copied here
    directory = save_toy(tmp_path / "custom", prior)
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomLM"}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "modeling_custom.py").write_text("from transformers import GPT2LMHeadModel\n\n\n"
                                                  "class CustomLM(GPT2LMHeadModel):\n    ran_custom_code = True\n")
    return directory


def test_model_with_its_own_code_needs_an_explicit_opt_in(tmp_path, capsys, custom_code_model):
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, prior="custom"), "-n", 4)
    assert code == 2
    assert "ships its own Python code ('auto_map' in config.json)" in err and "trust_remote_code: true" in err
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path), "--model", custom_code_model, "-n", 4)
    assert code == 2 and "ships its own Python code" in err
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_lm({"path": str(custom_code_model), "trust_remote_code": "yes"})
    trusted = load_lm({"path": str(custom_code_model), "trust_remote_code": True})
    assert trusted.model.ran_custom_code
    opted_in = target(tmp_path, prior={"path": "custom", "trust_remote_code": True})
    code, _, _ = run(capsys, "evaluate", "--target", opted_in, "-n", 4)
    assert code == 0


def test_training_model_resolves_beside_the_config_and_opts_in_explicitly(tmp_path, capsys, custom_code_model,
                                                                         monkeypatch):
    monkeypatch.chdir(custom_code_model.parent.parent)  # not the config's directory: `model: custom` is beside it
    config = train_config(tmp_path, model="custom")
    code, _, err = run(capsys, "train", config, "--out", tmp_path / "refused", "--quiet")
    assert code == 2 and "ships its own Python code" in err and "a training config's model" in err
    config = train_config(tmp_path, model={"path": "custom", "trust_remote_code": True})
    code, _, err = run(capsys, "train", config, "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_classifier_with_its_own_code_is_refused(tmp_path, capsys, custom_code_model):
    potentials = [{"exponential": {"reward": {"classifier": {"path": "custom"}}, "beta": 1}}]
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=potentials))
    assert code == 2 and "ships its own Python code" in err
    assert "use a classifier that the installed transformers implements" in err


@pytest.mark.parametrize("text", ["__import__('os').system('touch PWNED')", "lambda texts, prompts: [1.0]",
                                  "reward_fixtures:nan; import os", "os.system('x')", "exec"])
def test_reward_given_as_code_is_never_evaluated(tmp_path, capsys, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    potentials = [{"exponential": {"reward": {"function": text}, "beta": 1}}]
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=potentials))
    assert code == 2
    assert "must be a dotted path 'package.module:name'" in err and "never evaluated" in err
    assert not (tmp_path / "PWNED").exists()
    potentials = [{"exponential": {"reward": text, "beta": 1}}]
    code, _, err = run(capsys, "evaluate", "--target", target(tmp_path, potentials=potentials))
    assert code == 2 and f"unknown reward {text!r}" in err


def test_weights_load_only_from_safetensors_or_weights_only_pickles():
    """Every loading call in the package: torch.load with weights_only=True, from_pretrained with safetensors (or
    the packaged GGUF; a LoRA adapter only once its safetensors file is found), and never trust_remote_code=True."""
    source = Path(__file__).parents[2] / "src" / "bayeslm"
    for path in source.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.name}:{number}"
            if "torch.load(" in line:
                assert "weights_only=True" in line, where
            if "PeftModel.from_pretrained(" in line:  # peft picks safetensors when the file is there: checked first
                assert "ADAPTER_WEIGHTS" in path.read_text(), where
            elif ".from_pretrained(" in line and "Tokenizer" not in line:
                assert "use_safetensors=True" in line or "gguf_file=" in line, where
            assert "trust_remote_code=True" not in line, where
            assert not any(f"{call}(" in line.replace(".eval()", "") for call in (" eval", " exec")), where


# ----- the output directory ------------------------------------------------------------------------------------

def test_output_directory_holding_a_run_is_kept(tmp_path, capsys, old_run):
    before = snapshot(old_run)
    code, out, err = run(capsys, "train", train_config(tmp_path), "--out", old_run)
    assert code == 2 and out == ""
    assert f"{old_run} already holds a run; pass --resume to continue it or --overwrite to replace it" in err
    assert snapshot(old_run) == before


def test_overwrite_keeps_the_old_run_when_the_new_target_is_bad(tmp_path, capsys, old_run):
    before = snapshot(old_run)
    write(tmp_path / "target.yaml", {"prior": TOY, "prompts": [], "potentials": LENGTH})
    config = write(tmp_path / "train.yaml", {"target": "target.yaml", "steps": 1})
    code, _, err = run(capsys, "train", config, "--out", old_run, "--overwrite")
    assert code == 2 and "prompts: expected a non-empty list" in err
    assert snapshot(old_run) == before


def test_unwritable_out_file_is_a_config_error(tmp_path, capsys):
    code, _, err = run(capsys, "sample", "--target", target(tmp_path), "--method", "ancestral", "-n", 2,
                       "--out", tmp_path / "no" / "such" / "dir" / "samples.jsonl")
    assert code == 2 and "samples.jsonl: the directory" in err and "does not exist" in err


def test_finite_rewards_pass_the_checks(tmp_path, capsys):
    """The control: the same command with a well-behaved reward succeeds and writes --out."""
    out = tmp_path / "samples.jsonl"
    code, _, _ = run(capsys, "sample", "--target", target(tmp_path), "--method", "ancestral", "-n", 3, "--out", out)
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(math.isfinite(r["rewards"]["length"]) for r in records)
