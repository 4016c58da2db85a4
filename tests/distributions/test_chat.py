"""Chat templates as the Hugging Face ecosystem has them: applied by default when the tokenizer has one, turned
off or given a system message from Python (`chat=`) and target files (`chat:`), prompts given as conversations,
and the exact text the model sees shown."""

import json

import pytest
import yaml

import bayeslm as bl
from bayeslm.cli import main
from bayeslm.config import ConfigError
from bayeslm.distributions.loading import chat_settings
from bayeslm.modelling.target_file import load_target

# A template in the toy's own words: a system turn reads "very ...", a user turn "the ...", the reply opens "not".
TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}very {{ m['content'] }} {% else %}the "
            "{{ m['content'] }} {% endif %}{% endfor %}{% if add_generation_prompt %}not{% endif %}")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A toy model saved with a chat template, as an instruction-tuned model is."""
    path = tmp_path_factory.mktemp("chat")
    toy = bl.load_lm({"toy": {"seed": 0, "train_steps": 20}})
    toy.tokenizer.chat_template = TEMPLATE
    toy.model.save_pretrained(path)
    toy.tokenizer.save_pretrained(path)
    return path


def test_a_tokenizer_s_template_is_applied_by_default_and_can_be_turned_off(chat_model):
    assert bl.load_lm(str(chat_model)).render(["good movie"]) == ["the good movie not"]
    assert bl.load_lm(str(chat_model), chat=False).render(["good movie"]) == ["<bos> good movie"]
    with_system = bl.load_lm(str(chat_model), chat={"system": "bad"})
    assert with_system.render(["good movie"]) == ["very bad the good movie not"]
    assert with_system.chat_spec == {"system": "bad"}
    with pytest.raises(ValueError, match="has no chat template; set chat: false"):
        chat_settings(True, bl.load_lm({"toy": {"seed": 0}}).tokenizer, "toy")


def _target(tmp_path, chat_model, **fields):
    data = {"prior": str(chat_model), "max_new_tokens": 2, "potentials": [{"forbid": {"strings": ["bad"]}}],
            **fields}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "t.yaml"


def test_a_target_file_sets_the_template_and_takes_conversations(tmp_path, chat_model):
    target = load_target(_target(tmp_path, chat_model, prompts=["movie"], chat={"system": "good"}))
    assert target.prior.render(target.prompts) == ["very good the movie not"]
    assert load_target(_target(tmp_path, chat_model, prompts=["movie"], chat=False)).prior.chat is False
    conversation = [{"role": "system", "content": "good"}, {"role": "user", "content": "movie"}]
    target = load_target(_target(tmp_path, chat_model, prompts=[conversation, conversation]))
    assert target.prompts == ["movie", "movie"] and target.prior.system == "good"
    with pytest.raises(ConfigError, match="same system message"):
        load_target(_target(tmp_path, chat_model, prompts=[conversation, "movie"]))
    with pytest.raises(ConfigError, match="contradicts"):
        load_target(_target(tmp_path, chat_model, prompts=[conversation], chat=False))
    with pytest.raises(ConfigError, match="longer histories are not supported"):
        load_target(_target(tmp_path, chat_model, prompts=[[conversation[1], conversation[1]]]))


def test_evaluate_and_the_report_show_what_the_model_sees(tmp_path, chat_model, capsys):
    target = _target(tmp_path, chat_model, prompts=["movie"], chat={"system": "good"})
    assert main(["evaluate", "--target", str(target), "-n", "4", "--quiet"]) == 0
    assert "prompts as the model sees them: 'very good the movie not'" in capsys.readouterr().out
    assert main(["evaluate", "--target", str(target), "-n", "4", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prompts_as_seen"] == ["very good the movie not"]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"target": "t.yaml", "objective": "dpg", "steps": 1, "eval_n": 4}))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert json.loads((tmp_path / "run/prompts.json").read_text()) == [
        {"prompt": "movie", "as_seen": "very good the movie not"}]
    assert main(["report", str(tmp_path / "run"), "--quiet"]) == 0
    assert "very good the movie not" in (tmp_path / "run/report.html").read_text()
