"""What decoding and scoring need of a language model: its network, its special tokens, its warp and languages,
and the context it runs in. `LM` is one; the engines (`decoding`, `scoring`) name this protocol rather
than `LM`, so that they import nothing above them and `LM` is free to grow.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import torch

from bayeslm.distributions.warp import Warp


class Runnable(Protocol):
    model: torch.nn.Module  # the Hugging Face causal LM (under a PEFT wrapper for a LoRA model)
    name: str
    warp: Warp
    languages: tuple  # formal languages its tokens are masked to (`bayeslm.distributions.masking`)
    eos_ids: torch.Tensor
    pad_id: int
    batch_size: int
    autocast: torch.dtype | None
    decoding: str  # "eager" or "compiled" (`bayeslm.distributions.decoding.decoder`)
    adapter_disabled: bool

    @property
    def device(self) -> torch.device: ...

    def forward(self, **inputs): ...

    def running(self) -> AbstractContextManager: ...
