"""What a Hub user expects of a run's outputs: a model card beside the model, and for a LoRA run the adapter in
peft's format beside the merged model, each loadable by transformers/peft and able to generate."""

import torch
from conftest import TOY_TARGET, config

from bayeslm.distributions.loading import load_lm
from bayeslm.training.run import train


def test_a_lora_run_saves_the_merged_model_and_its_adapter_each_with_a_card(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    train(config(lora={"r": 4}, steps=2, eval_n=8), run, quiet=True)
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    prior = load_lm(TOY_TARGET["prior"])
    with_adapter = PeftModel.from_pretrained(prior.model, run / "adapter").eval()
    ids = tokenizer("the movie", return_tensors="pt").input_ids
    with torch.no_grad():  # the adapter on its base is the merged model
        assert torch.allclose(merged(ids).logits, with_adapter(ids).logits, atol=1e-4)
    assert merged.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3
    assert load_lm(str(run / "adapter")).log_prob(["the movie"], [[3]]).isfinite().all()  # and bayeslm loads it

    card = (run / "model/README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "bayeslm" in card
    assert "## Target" in card and "keyword" in card  # the target as written
    assert "| KL(q‖π*) |" in card and "prior π0" in card and "±" in card  # the scorecard before and after
    assert "AutoPeftModelForCausalLM" in (run / "adapter/README.md").read_text()


def test_a_full_fine_tuning_run_has_one_model_and_its_card(tmp_path):
    run = tmp_path / "run"
    train(config(steps=1, eval_n=0), run, quiet=True)
    assert not (run / "adapter").exists()
    assert "Not measured (eval_n: 0)" in (run / "model/README.md").read_text()
