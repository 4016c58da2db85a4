"""TRL's RLOOTrainer as one arm of bench/frontier.py: trains LoRA on the default prior's weights towards reward
VADER − β·KL (TRL's k1 estimator inside the reward), then saves the merged model where bayeslm can score it.

Runs inside TRL's own virtual environment (bench/.venv-trl, made by common.peer_venv), never in bayeslm's:

    bench/.venv-trl/bin/python bench/trl_rloo.py --model-dir DIR --out DIR --prompts-json FILE --beta 0.15 ...

Prints one line `RESULT {json}`: seconds of training, TRL's version and the settings it ran with.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, kind in [("model-dir", Path), ("out", Path), ("prompts-json", Path), ("steps", int),
                       ("prompts-per-step", int), ("samples-per-prompt", int), ("lr", float), ("beta", float),
                       ("lora-r", int), ("max-new-tokens", int), ("seed", int)]:
        parser.add_argument(f"--{name}", type=kind, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import RLOOConfig, RLOOTrainer
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    torch.manual_seed(args.seed)
    analyzer = SentimentIntensityAnalyzer()

    def sentiment(completions, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [analyzer.polarity_scores(t)["compound"] for t in texts]

    prompts = json.loads(args.prompts_json.read_text())
    batch = args.prompts_per_step * args.samples_per_prompt
    # What bayeslm's arms run with: the same samples a step, learning rate (constant, no warm-up), gradient clipping,
    # LoRA rank and scale, sampling at temperature 1 with no truncation, fp32.
    settings = dict(output_dir=tempfile.mkdtemp(prefix="trl-frontier-"), per_device_train_batch_size=batch,
                    num_generations=args.samples_per_prompt, max_completion_length=args.max_new_tokens,
                    beta=args.beta, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
                    max_grad_norm=1.0, max_steps=args.steps, temperature=1.0, top_p=1.0, top_k=0,
                    disable_dropout=True, logging_steps=10**6, save_strategy="no", report_to="none",
                    use_cpu=True, bf16=False, gradient_checkpointing=False, seed=args.seed,
                    dataloader_num_workers=0)
    config = RLOOConfig(**settings)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    copies = -(-args.steps * args.prompts_per_step // len(prompts))  # enough prompts for every step
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts] * copies})
    trainer = RLOOTrainer(model=model, reward_funcs=sentiment, args=config, train_dataset=data,
                          processing_class=tokenizer, peft_config=lora)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    shown = {k: getattr(config, k) for k in ("beta", "num_generations", "normalize_advantages", "num_iterations",
                                              "learning_rate", "max_completion_length") if hasattr(config, k)}
    print("RESULT " + json.dumps({"seconds": seconds, "trl": trl.__version__, "torch": torch.__version__,
                                  "config": shown}), flush=True)


if __name__ == "__main__":
    main()
