"""Issue 6, item 1: training throughput of bayeslm's KL-RL against TRL's RLOOTrainer, side by side in one run.

    .venv/bin/python bench/vs_trl.py [--steps 3] [--warmup 1] [--modes lora,full] [--trl-settings best,default]
                                     [--flops]

Both sides: the embedded SmolLM2-135M-Instruct prior (TRL loads the very safetensors bayeslm caches), the same
16 prompts as user turns of the chat template, 16 prompts × 4 samples per optimiser step, at most 32 new
tokens (EOS ends a sample, as in real training), KL coefficient β = 0.1, reward VADER compound sentiment, a
leave-one-out baseline, AdamW at lr 1e-5 with gradient clipping at 1, one optimiser step per batch, fp32 master
weights; full fine-tuning and LoRA (r = 8, α = 16, every linear layer but the head, no dropout).
  bayeslm  `klrl` with its default analytic KL (summed over the vocabulary), `bayeslm.training.loop.Trainer.step`
  TRL      `RLOOTrainer` (KL as k1 inside the reward), in two settings:
           default  RLOOConfig's defaults for what is not fixed above: bf16 mixed precision and gradient
                    checkpointing on (TRL's defaults, also on a CPU)
           best     what runs fastest on this CPU: fp32 (the CPU has no native bf16 matrix unit) and no gradient
                    checkpointing (memory is plentiful at this size)
TRL lives in its own virtual environment, bench/.venv-trl (created on first use: CPU torch 2.13.0, then trl; it
never touches .venv, so bayeslm's transformers stays as it is); its side runs as a subprocess of this script,
after bayeslm's, never at the same time. Samples/s are 64 / wall time of each optimiser step (generation,
scoring, reward, forward, backward, update), median over the timed steps after warm-up.

With --flops, one more step of each side runs under torch's FLOP counter (every matrix product, forward and
backward, generation included, as executed), so that a ratio splits into work and speed: samples/s ratio =
(TRL's FLOPs per sample ÷ bayeslm's) × (bayeslm's GFLOP/s ÷ TRL's), each side's GFLOP/s being its counted FLOPs
per sample times its timed samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRL_VENV = HERE / ".venv-trl"
TRL_PY = TRL_VENV / "bin" / "python"
TRL_PACKAGES = ("trl", "transformers==5.23.0", "peft==0.21.2", "accelerate==1.15.0", "vaderSentiment")


# ----- the TRL side (runs inside bench/.venv-trl) ------------------------------------------------------------------

def trl_worker(args):
    """One TRL configuration; prints one JSON line with the step times."""
    import tempfile

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sys.path.insert(0, str(HERE))
    from common import BETA, PROMPTS  # common imports torch and sets HF_HUB_OFFLINE; bayeslm itself is not needed

    analyzer = SentimentIntensityAnalyzer()
    lengths = []

    def sentiment(completions, completion_ids=None, **kwargs):
        if completion_ids is not None:
            lengths.append(sum(len(c) for c in completion_ids) / len(completion_ids))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [analyzer.polarity_scores(t)["compound"] for t in texts]

    times = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.started = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.started)

    best = args.trl_setting == "best"
    settings = dict(output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
                    per_device_train_batch_size=args.prompts * args.samples, num_generations=args.samples,
                    max_completion_length=args.max_new_tokens, beta=BETA,
                    learning_rate=1e-5, lr_scheduler_type="constant", max_grad_norm=1.0,
                    max_steps=args.warmup + args.steps, temperature=1.0, top_p=1.0, top_k=0, disable_dropout=True,
                    logging_steps=10**6, save_strategy="no", report_to="none", use_cpu=args.device == "cpu",
                    seed=0, dataloader_num_workers=0)
    if best:  # bf16 only where it is native (a GPU); this CPU emulates it
        settings.update(bf16=args.device != "cpu", gradient_checkpointing=False)
    config = RLOOConfig(**settings)
    path = Path(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    peft_config = None
    if args.mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    prompts = (PROMPTS * args.prompts)[:args.prompts]
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts] * 8})
    trainer = RLOOTrainer(model=model, reward_funcs=sentiment, args=config, train_dataset=data,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[StepTimer()])
    flops = None
    if args.flops:  # warm-up and timed steps are 0 and 1 here: the one step runs under the counter
        from common import count_flops

        flops = count_flops(trainer.train)
    else:
        trainer.train()
    import trl

    print("RESULT " + json.dumps({"side": f"trl-{args.trl_setting}", "mode": args.mode, "step_seconds": times,
                                  "flops": flops,
                                  "mean_completion_tokens": lengths, "bf16": bool(config.bf16),
                                  "gradient_checkpointing": bool(config.gradient_checkpointing),
                                  "trl": trl.__version__, "torch": torch.__version__}), flush=True)


def run_trl(args, mode: str, setting: str, steps: int, warmup: int, flops: bool = False) -> dict:
    cmd = [str(getattr(args, "trl_python", None) or TRL_PY), __file__, "--trl-worker", "--device", args.device,
           "--mode", mode, "--trl-setting", setting, "--steps", str(steps), "--warmup", str(warmup),
           "--prompts", str(args.prompts), "--samples", str(args.samples),
           "--max-new-tokens", str(args.max_new_tokens), "--model-dir", str(args.model_dir)] + (
        ["--flops"] if flops else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise RuntimeError(f"TRL run {mode}/{setting} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len("RESULT "):])
    result["warmup_seconds"] = result["step_seconds"][:warmup]
    result["step_seconds"] = result["step_seconds"][warmup:]
    result["mean_completion_tokens"] = result["mean_completion_tokens"][warmup:]
    return result


# ----- the bayeslm side --------------------------------------------------------------------------------------------

def run_bayeslm(args, mode: str) -> dict:
    import common

    trainer = common.klrl_trainer(lora=mode == "lora", n_prompts=args.prompts, samples_per_prompt=args.samples,
                                  max_new_tokens=args.max_new_tokens, batch_size=args.prompts * args.samples)
    def completion_tokens(record):
        return record["tokens_per_s"] * record["step_seconds"] / (args.prompts * args.samples)

    records = [trainer.step() for _ in range(args.warmup + args.steps)][args.warmup:]
    result = {"side": "bayeslm", "mode": mode, "step_seconds": [r["step_seconds"] for r in records],
              "mean_completion_tokens": [completion_tokens(r) for r in records]}
    if args.flops:
        counted = []
        result["flops"] = common.count_flops(lambda: counted.append(trainer.step()))
        result["flops_completion_tokens"] = completion_tokens(counted[0])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--default-steps", type=int, help="timed steps for TRL's default setting (default: --steps)")
    parser.add_argument("--default-warmup", type=int,
                        help="warm-up steps for TRL's default setting (default: --warmup)")
    parser.add_argument("--modes", default="lora,full")
    parser.add_argument("--trl-settings", default="best,default")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--flops", action="store_true",
                        help="count one more step of each side's FLOPs, to split the ratio into work and speed")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--trl-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--trl-setting", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_worker:
        return trl_worker(args)

    sys.path.insert(0, str(HERE))
    import common

    common.print_machine()
    common.peer_venv(TRL_VENV, *TRL_PACKAGES)

    from bayeslm.distributions.loading import _default_prior_dir

    args.model_dir = _default_prior_dir()  # the safetensors cache of the default prior: TRL loads the same weights
    n = args.prompts * args.samples
    print(f"# {args.prompts} prompts × {args.samples} samples = {n} per step, ≤ {args.max_new_tokens} new tokens, "
          f"{args.warmup} warm-up + {args.steps} timed steps; TRL from {TRL_VENV}", flush=True)
    results = []
    for mode in args.modes.split(","):
        results.append(run_bayeslm(args, mode))
        print(_line(results[-1], n), flush=True)
        for setting in args.trl_settings.split(","):
            steps, warmup = args.steps, args.warmup
            if setting == "default":  # bf16 on a CPU without a bf16 unit is slow: fewer steps may be asked for
                steps = args.default_steps if args.default_steps is not None else steps
                warmup = args.default_warmup if args.default_warmup is not None else warmup
            results.append(run_trl(args, mode, setting, steps, warmup))
            if args.flops:
                counted = run_trl(args, mode, setting, 1, 0, flops=True)
                results[-1].update(flops=counted["flops"], flops_completion_tokens=counted["mean_completion_tokens"][0])
            print(_line(results[-1], n), flush=True)
    print("\n## ratios (bayeslm samples/s ÷ TRL samples/s)")
    for mode in args.modes.split(","):
        ours = next(r for r in results if r["side"] == "bayeslm" and r["mode"] == mode)
        for r in results:
            if r["mode"] == mode and r["side"] != "bayeslm":
                ratio = common.median(r["step_seconds"]) / common.median(ours["step_seconds"])
                line = f"{mode:5s} bayeslm / {r['side']:12s}: {ratio:.2f}×"
                if args.flops:
                    work = r["flops"] / ours["flops"]
                    line += f" = {work:.2f}× fewer FLOPs per sample × {ratio / work:.2f}× the GFLOP/s"
                print(line)
    common.emit_json(args.json, {"config": vars(args) | {"model_dir": str(args.model_dir)},
                                 "machine": common.machine(), "results": results})


def _line(r: dict, n: int) -> str:
    import common

    t = common.median(r["step_seconds"])
    extra = f" (bf16={r['bf16']}, gradient_checkpointing={r['gradient_checkpointing']}, trl {r['trl']})" \
        if "trl" in r else ""
    tokens = sum(r["mean_completion_tokens"]) / max(1, len(r["mean_completion_tokens"]))
    flops = (f"; one more step counted: {r['flops'] / 1e12:.2f} TFLOP ({r['flops_completion_tokens']:.1f} tokens "
             f"per completion), {r['flops'] / t / 1e9:.0f} GFLOP/s at the median step time") if r.get("flops") else ""
    return (f"{r['side']:12s} {r['mode']:5s} step {common.spread(r['step_seconds'])}  {n / t:6.2f} samples/s, "
            f"{tokens:.1f} tokens per completion{extra}{flops}")


if __name__ == "__main__":
    main()
