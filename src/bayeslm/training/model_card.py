"""The model card a run writes beside its model (RUN/model/README.md, and RUN/adapter/README.md for a LoRA run):
what the Hugging Face Hub shows for a model. It says what the model approximates and how close it came: the
prior, the target as written, the objective and its options, and the scorecard of the prior and the model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bayeslm.config import to_dict

HUB_IDS = {"default": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # where a prior by name lives on the Hub
SHOWN = [("kl_model_target", "KL(q‖π*)"), ("kl_target_model", "KL(π*‖q)"), ("log_z", "log Z"), ("elbo", "ELBO"),
         ("kl_model_prior", "KL(q‖π0)"), ("reward_mean", "reward under q"), ("target_reward_mean", "reward under π*"),
         ("entropy", "entropy H(q)")]


def write(run_dir: Path, directory: Path, config, prior, *, adapter: bool = False):
    """Writes directory/README.md from the run directory's record (its target and scorecards), the config and the
    prior's source (`LM.source`)."""
    front = {"library_name": "peft" if adapter else "transformers", "tags": ["bayeslm", "posterior-fine-tuning"]}
    if isinstance(prior, str) and prior in HUB_IDS:
        front["base_model"] = HUB_IDS[prior]
    target_text = (run_dir / "target.yaml").read_text(encoding="utf-8") if (run_dir / "target.yaml").is_file() else ""
    objective = yaml.safe_dump(to_dict(config)["objective"], sort_keys=False, default_flow_style=True).strip()
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {run_dir.name}", "",
             "Fine-tuned with bayeslm to approximate a target posterior "
             "π*(x|c) = π0(x|c)·φ(x,c)/Z(c): the prior π0 below, conditioned on the evidence φ of the target.", "",
             f"- prior π0: `{prior}`", f"- objective: `{objective}`",
             f"- {config.steps} steps, lr {config.lr}, {config.samples_per_prompt} samples per prompt, "
             + (f"LoRA r {config.lora.r}" if config.lora is not None else "full fine-tuning"), "",
             "## Target", "", "```yaml", target_text.strip(), "```", ""]
    lines += _scorecard(run_dir, config.eval_n)
    lines += ["## Use", "", "```python"]
    if adapter:
        lines += ["from peft import AutoPeftModelForCausalLM", "",
                  f'model = AutoPeftModelForCausalLM.from_pretrained("{directory.name}", use_safetensors=True)']
    else:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f'model = AutoModelForCausalLM.from_pretrained("{directory.name}", use_safetensors=True)',
                  f'tokenizer = AutoTokenizer.from_pretrained("{directory.name}")']
    lines += ["```", "", f"or score it against its target: `bayeslm evaluate --target target.yaml --model "
              f"{directory.name}`.", ""]
    (directory / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _scorecard(run_dir: Path, per_prompt: int) -> list[str]:
    cards = {name: json.loads((run_dir / file).read_text()) for name, file in
             (("prior π0", "scorecard_prior.json"), ("model q", "scorecard.json")) if (run_dir / file).is_file()}
    if not cards:
        return ["## Scorecard", "", "Not measured (eval_n: 0).", ""]
    out = ["## Scorecard", "", f"Each against the target, from {per_prompt} samples per prompt (± one standard "
           "error; `!` marks an estimate that cannot be trusted).", "", "| | " + " | ".join(cards) + " |",
           "|---|" + "---|" * len(cards)]
    for key, label in SHOWN:
        out.append(f"| {label} | " + " | ".join(_cell(card.get(key)) for card in cards.values()) + " |")
    return out + [""]


def _cell(figure) -> str:
    if not isinstance(figure, dict):
        return "–"
    if figure.get("value") is None:
        return "∞"
    return f"{figure['value']:.4f} ± {figure['stderr']:.4f}" + (" !" if figure.get("unreliable") else "")

