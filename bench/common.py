"""What every speed benchmark shares: the machine's description, timing, FLOP counting, peak memory, and the
KL-RL training setup on the embedded SmolLM2-135M prior (the one compared with TRL in `vs_trl.py`).

Not a library module: the benchmarks import it as `common` (they put bench/ on sys.path themselves).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
LOAD_AT_START = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else None
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

# 16 prompts, the same on both sides of every comparison (the chat template wraps each as a user turn).
PROMPTS = [
    "Write one sentence about your day.",
    "Describe the weather today in one sentence.",
    "Tell me about your favourite food.",
    "Write a short review of a film you saw.",
    "What did you do last weekend?",
    "Describe your neighbourhood in one sentence.",
    "Write one sentence about your job.",
    "How was your morning commute?",
    "Describe a book you read recently.",
    "Write a sentence about your best friend.",
    "What do you think of the new café in town?",
    "Describe your last holiday in one sentence.",
    "Write one sentence about the news today.",
    "How do you feel about Mondays?",
    "Describe the last meal you cooked.",
    "Write a sentence about the city you live in.",
]
BETA = 0.1  # KL coefficient of both sides: π* ∝ π0·exp(VADER/0.1)


def machine() -> dict:
    """The CPU and the software measured on: what any figure below depends on."""
    flags = set()
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    import transformers

    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "isa": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")},
            "onednn_isa": _onednn_isa()}


def _onednn_isa() -> str | None:
    with contextlib.suppress(Exception):
        return torch.backends.cpu.get_cpu_capability()
    return None


def print_machine():
    m = machine()
    isa = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in m["isa"].items())
    print(f"# machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads, "
          f"CPU capability {m['onednn_isa']}), transformers {m['transformers']}")
    print(f"# ISA: {isa}")
    with contextlib.suppress(OSError):
        print(f"# load average before: {Path('/proc/loadavg').read_text().split()[:3]}")


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Times each function `repeats` times, alternating between them (A B A B ...), so that a drift of the
    machine's speed hits every side alike; `warmup` untimed rounds first."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def agreement(a, b) -> tuple[str, float]:
    """How two samplings of the same seed agree: the rows that drew the same tokens, and the largest |Δ log-prob|
    before each row's first different token (the inverse CDF moves a draw when rounding shifts the cumulative
    mass past its uniform; from there on the row samples something else)."""
    differs = a.tokens != b.tokens
    first = torch.where(differs.any(1), differs.float().argmax(1), a.tokens.shape[1])
    before = torch.arange(a.tokens.shape[1]) < first[:, None]
    diff = ((a.token_log_probs - b.token_log_probs).abs() * before).max().item()
    return f"{int((~differs.any(1)).sum())} of {len(a.tokens)} rows", diff


def median(xs):
    return statistics.median(xs)


def spread(xs) -> str:
    """median [min, max] in seconds."""
    return f"{median(xs):.3f} s [{min(xs):.3f}, {max(xs):.3f}]"


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ----- FLOPs -------------------------------------------------------------------------------------------------------

def _register_cpu_attention_flops():
    """torch's FlopCounterMode counts the CUDA attention kernels but not the CPU flash kernel that SDPA picks
    here: count it with the same formula (full, not causal, attention, as torch does for the others)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    with contextlib.suppress(AttributeError, KeyError, RuntimeError):
        fwd = aten._scaled_dot_product_flash_attention_for_cpu
        if fwd.default not in fc.flop_registry and fwd not in fc.flop_registry:
            fc.register_flop_formula(fwd)(
                lambda q, k, v, *args, out_shape=None, **kw: fc.sdpa_flop_count(q, k, v))
    with contextlib.suppress(AttributeError, KeyError, RuntimeError):
        bwd = aten._scaled_dot_product_flash_attention_for_cpu_backward
        if bwd.default not in fc.flop_registry and bwd not in fc.flop_registry:
            fc.register_flop_formula(bwd)(
                lambda g, q, k, v, *args, out_shape=None, **kw: fc.sdpa_backward_flop_count(g, q, k, v))


def count_flops(fn) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) that `fn()` executes, forward and backward, as run (padding
    included): the work the hardware actually does."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ----- the training setup ------------------------------------------------------------------------------------------

def sentiment_target(n_prompts: int, max_new_tokens: int, batch_size: int):
    """π* ∝ π0·exp(VADER/β) on the embedded SmolLM2-135M-Instruct prior, loaded fresh (LoRA injects into the
    prior's own modules, so each trainer needs its own)."""
    from bayeslm.distributions.loading import load_lm
    from bayeslm.modelling.potentials import Exponential
    from bayeslm.modelling.rewards import sentiment

    prior = load_lm("default", batch_size=batch_size)
    return (prior * Exponential(sentiment(), beta=BETA)).given(PROMPTS[:n_prompts] if n_prompts <= len(PROMPTS)
                                                                else (PROMPTS * n_prompts)[:n_prompts],
                                                                max_new_tokens)


def klrl_trainer(*, lora: bool, precision: str = "fp32", n_prompts: int = 16, samples_per_prompt: int = 4,
                 max_new_tokens: int = 32, batch_size: int = 64, lr: float = 1e-5, kl_estimator: str = "analytic",
                 fixed_length: bool = False, objective: str = "klrl", backward_batch_size: int | None = None,
                 gradient_checkpointing: bool = False, grad_accum: int = 1, sharding: str = "none", world=None,
                 target=None):
    """A bayeslm `Trainer` for KL-RL (leave-one-out baseline) on the sentiment target; `step()` is one
    optimiser step of n_prompts × samples_per_prompt samples. `fixed_length` stops sampling from ending at
    EOS, so that every step does the same work (for FLOP fractions); the objective is unchanged."""
    import bayeslm as bl
    from bayeslm.training.config import settings_config
    from bayeslm.training.loop import Trainer

    target = target or sentiment_target(n_prompts, max_new_tokens, batch_size)
    options = {"klrl": {"kl": kl_estimator}, "dpg": {"proposal": "model"}, "fdpg": {"proposal": "model"}}
    settings = {"steps": 10**6,
                "prompts_per_step": n_prompts, "samples_per_prompt": samples_per_prompt, "lr": lr,
                "precision": precision, "eval_n": 0,
                "batch_size": batch_size, "backward_batch_size": backward_batch_size,
                "gradient_checkpointing": gradient_checkpointing, "grad_accum": grad_accum, "sharding": sharding}
    config = settings_config({objective: options.get(objective, {})}, bl.LoRA(r=8, alpha=16) if lora else None,
                             settings)
    trainer = Trainer.from_config(config, target, quiet=True, world=world)  # from_config: data-parallel benches
    if fixed_length:
        never = torch.tensor([-1])
        trainer.model.eos_ids = never
    return trainer


def emit_json(path: str | None, data: dict):
    """Writes the figures to `path`, with the `record` that makes them reproducible (see `record`)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"record": record(), **data}, indent=2, default=str))


def record() -> dict:
    """What a result needs to be reproduced and compared: the command line, the commit (and whether the tree had
    uncommitted changes), the date, the machine with its CPU flags, and the load average when the run began."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True).stdout.strip())
    return {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "commit": commit,
            "uncommitted_changes": dirty, "date": datetime.date.today().isoformat(), "machine": machine(),
            "load_at_start": LOAD_AT_START}


def peer_venv(venv: Path, *packages: str) -> Path:
    """The python of a peer's own virtual environment under bench/, made on first use: CPU torch 2.13.0 first (so
    the peer's dependencies never pull a CUDA build), then `packages`. Peers are never bayeslm's dependencies."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"# creating {venv} (CPU torch 2.13.0, {', '.join(packages)})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        subprocess.run(pip + list(packages), check=True)
    return python
