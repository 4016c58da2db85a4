"""The probability of a label under a local Hugging Face sequence classifier."""

from __future__ import annotations

from pathlib import Path

import torch

from bayeslm.modelling.rewards.base import REWARDS, Reward


@REWARDS.register_function
def classifier(path: str, label: str | int = 1, batch_size: int = 32, with_prompt: bool = False) -> Reward:
    """Probability of `label` (a name or an index) under a local Hugging Face sequence classifier; for a reward
    model (a single output, `num_labels: 1`), its raw score. `with_prompt` gives the model the prompt with the
    completion, as a text pair (what reward models trained on prompt-response pairs expect). It runs on this
    process's GPU when there is one (the training device), else on the CPU. A score that is exactly the same
    for different texts is an error: a model's output is never constant unless its head is broken."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bayeslm.distributions.loading import check_model_dir

    check_model_dir(Path(path), what="classifier", can_opt_in=False)
    # Safe loading: weights from safetensors only, never code shipped in the model directory.
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                               trust_remote_code=False).eval()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    model.to(device)
    scalar = model.config.num_labels == 1
    index = label if isinstance(label, int) and not isinstance(label, bool) else model.config.label2id.get(label)
    if not scalar and (index is None or not 0 <= index < model.config.num_labels):
        raise ValueError(f"label {label!r} is not one of the classifier's labels {model.config.id2label}")

    @torch.no_grad()
    def score(texts, prompts):
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = slice(start, start + batch_size)
            pair = (prompts[chunk], texts[chunk]) if with_prompt else (texts[chunk],)
            inputs = tokenizer(*pair, return_tensors="pt", padding=True, truncation=True).to(device)
            logits = model(**inputs).logits.float().cpu()
            # A single output is a score (its softmax would be 1 for every text); otherwise a label's probability.
            out.append(logits[:, 0] if scalar else logits.softmax(-1)[:, index])
        return torch.cat(out).double() if out else []

    return Reward(score, f"classifier:{Path(path).name}" + ("" if scalar else f":{label}"), varies=True)
