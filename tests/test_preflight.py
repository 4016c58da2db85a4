"""Config errors before any heavy import: the preflight check (`bayeslm.preflight`) accepts every valid file,
refuses mistakes with the full validation's own message, and imports neither torch nor transformers."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bayeslm.cli import main
from bayeslm.config import ConfigError, load_yaml
from bayeslm.modelling.target_file import parse_target
from bayeslm.preflight import check_target, check_target_file, check_train
from bayeslm.training.config import load_config

EXAMPLES = Path(__file__).parent.parent / "examples"
TARGET = {"prior": {"toy": {"seed": 0}}, "prompts": [""], "max_new_tokens": 2,
          "potentials": [{"exponential": {"reward": "length", "beta": 1.0}}]}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_passes(path):
    data = load_yaml(path.read_text())
    if "potentials" in data:
        check_target_file(path)
    else:
        check_train(data, path.parent)


@pytest.mark.parametrize("change, full", [
    (lambda t: t["potentials"][0]["exponential"].update(betta=1), "target"),
    (lambda t: t["potentials"][0]["exponential"].update(beta=float("nan")), "target"),
    (lambda t: t["potentials"][0]["exponential"].update(beta=-1.0), "target"),
    (lambda t: t["potentials"].append({"forbid": {}}), "target"),
    (lambda t: t["potentials"].append({"exponentail": {}}), "target"),
    (lambda t: t.update(max_new_tokns=3), "target"),
])
def test_a_mistake_in_a_target_is_refused_as_the_full_validation_refuses_it(change, full):
    target = yaml.safe_load(yaml.safe_dump(TARGET))
    change(target)
    with pytest.raises(ConfigError) as early:
        check_target(target)
    with pytest.raises(ConfigError) as late:
        parse_target(target)
    assert str(early.value) == str(late.value)


@pytest.mark.parametrize("settings", [{"stpes": 3}, {"lr": "fast"}, {"lora": {"r": 0}},
                                      {"objective": {"dpg": {"propsal": "prior"}}}, {"objective": "ppo"},
                                      {"schedule": "cosin"}, {"lr": float("inf")}])
def test_a_mistake_in_a_training_config_is_refused_as_the_full_validation_refuses_it(settings, tmp_path):
    data = {"target": TARGET, **settings}
    with pytest.raises(ConfigError) as early:
        check_train(data, tmp_path)
    with pytest.raises(ConfigError) as late:
        load_config(data)
    assert str(early.value) == str(late.value)


def test_the_check_imports_neither_torch_nor_transformers(tmp_path):
    code = ("import sys; from pathlib import Path; from bayeslm.preflight import check_target_file; "
            f"check_target_file(Path({str(EXAMPLES / 'toy_sentiment.yaml')!r})); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_the_commands_stop_at_a_typo_with_exit_2(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({**TARGET, "potentials": [{"exponential": {"betta": 1}}]}))
    for command in (["evaluate"], ["sample", "--method", "smc"], ["plan"]):
        assert main([*command, "--target", str(tmp_path / "t.yaml")]) == 2
        assert "did you mean 'beta' for 'betta'" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"target": "t.yaml", "steps": 2}))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "did you mean 'beta' for 'betta'" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_the_target_keys_are_the_loader_s():
    from bayeslm.modelling.prompts import PROMPT_KEYS
    from bayeslm.preflight import TARGET_KEYS

    assert set(PROMPT_KEYS) <= TARGET_KEYS


@pytest.mark.parametrize("text, message", [
    ("prior: {toy: {seed: 0}}\npotentials:\n\t- {exponential: {reward: length, beta: 1}}\n",
     "not valid YAML at line 3, column 1"),
    ("prior: {toy: {seed: 0}\n", "not valid YAML at line 2, column 1"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", "expands to more than 100,000 values"),
    ("prior: {toy: {seed: 0}}\nprompts: [[{role: user, content: a}, {role: assistant, content: b}, "
     "{role: user, content: c}]]\npotentials: [{exponential: {reward: length, beta: 1}}]\n",
     "a conversation prompt must be"),
    ("prior: {toy: {seed: 0}}\nprompts_file: p.jsonl\npotentials: [{exponential: {reward: length, beta: 1}}]\n",
     "p.jsonl line 2 is not JSON"),
])
def test_yaml_and_prompt_mistakes_are_refused_before_torch_naming_file_and_line(text, message, tmp_path):
    (tmp_path / "p.jsonl").write_text('"fine"\n{not json\n')
    path = tmp_path / "target.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as refused:
        check_target_file(path)
    if "YAML" in message or "expands" in message:  # where in the file; a prompt's error names its key
        assert str(refused.value).startswith(str(path))


def test_merge_keys_work_as_in_any_yaml_tool():
    data = load_yaml("base: &base {steps: 3, lr: 0.001}\nrun:\n  <<: *base\n  lr: 0.01\n")
    assert data["run"] == {"steps": 3, "lr": 0.01}


@pytest.mark.parametrize("potential, message", [
    ({"regex": {"pattern": "a("}}, "unclosed group"),
    ({"grammar": {"lark": "start: foo"}}, 'unknown name: "foo"'),
    ({"json_schema": {"schema": {"type": "objectt"}}}, "Invalid type: objectt"),
])
def test_a_pattern_grammar_or_schema_that_does_not_compile_is_refused_before_torch(potential, message, tmp_path):
    target = {**TARGET, "prior": {"toy": {"seed": 0, "byte_level": True}}, "potentials": [potential]}
    with pytest.raises(ConfigError, match=message) as early:
        check_target(target)
    with pytest.raises(ConfigError, match=message) as late:
        parse_target(target)
    assert str(late.value).endswith(str(early.value).split(": ", 1)[1])  # llguidance's words, and where in the file
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(target))
    code = ("import sys; from pathlib import Path; from bayeslm.preflight import check_target_file\n"
            f"try:\n    check_target_file(Path({str(path)!r}))\nexcept Exception as e:\n    print(type(e).__name__)\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["ConfigError", "[]"], done.stderr


@pytest.mark.parametrize("options, message", [
    (["--method", "smc", "--ess-threshold", "5"], "--method.smc.ess_threshold: must be in [0, 1], got 5.0"),
    (["--method", "smc", "--set", "ess_threshold=-1"], "--method.smc.ess_threshold: must be in [0, 1], got -1"),
    (["--method", "importance", "--ess-threshold", "0.5"], "--ess-threshold is an option of smc, not of importance"),
])
def test_a_sampler_option_out_of_range_is_refused_before_any_model_loads(options, message, tmp_path, capsys):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(TARGET))
    assert main(["sample", "--target", str(tmp_path / "t.yaml"), *options]) == 2
    assert capsys.readouterr().err.strip() == f"bayeslm: error: {message}"
