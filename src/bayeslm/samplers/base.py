"""The sampler protocol: a dataclass of its options whose `sample` draws n samples per prompt of a target.

Each built-in is one function with the equation it implements, `fn(target, proposal=None, n=256, *, <options>,
seed=0) -> Draws`, registered by `@sampler(name, summary)`: its keyword-only arguments (but `seed`) are its
options, each `Annotated[type, Option(doc, check)]` with the function's default, and the registry's dataclass is
derived from them, so that an option is declared once. `bl.sample(target, "smc", n=64, ess_threshold=0.3)` and
`bayeslm sample --method smc --ess-threshold 0.3` both run `smc(target, None, 64, ess_threshold=0.3, seed=0)`.
A sampler of your own may also subclass `Sampler` directly (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Callable, ClassVar

from bayeslm.config import ConfigError, field, validate
from bayeslm.distributions.lm import LM
from bayeslm.modelling.target import Target
from bayeslm.registry import Registry
from bayeslm.samplers.result import Draws

SAMPLERS = Registry("sampler", "bayeslm.samplers", lambda entry: isinstance(entry, type) and issubclass(entry, Sampler))


@dataclass
class Sampler:
    """Base of every sampler."""

    name: ClassVar[str] = "sampler"

    def __post_init__(self):
        validate(self)

    def sample(self, target: Target, proposal: LM | None = None, n: int = 256, *, seed: int = 0) -> Draws:
        """n samples per prompt of `target`, drawn from `proposal` (default: the target's prior)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Option:
    """A sampler option's documentation and check `(value) -> error or None`, as `Annotated` metadata."""

    doc: str
    check: Callable | None = None


def sampler(name: str, summary: str, *, check: Callable[[Sampler], str | None] | None = None,
            aliases: tuple[str, ...] = ()):
    """Registers a sampler function in `SAMPLERS` under `name` (see the module docstring); `summary` is what the
    docs and `--help` say it does, `check(options)` what is wrong with a combination of options (None if nothing),
    `aliases` older spellings of its name that keep working."""
    def register(fn):
        hints = typing.get_type_hints(inspect.unwrap(fn), include_extras=True)
        fields = []
        for p in inspect.signature(fn).parameters.values():
            if p.kind is not p.KEYWORD_ONLY or p.name == "seed":
                continue
            hint = hints[p.name]
            option = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Option)), Option(""))
            bare = typing.get_args(hint)[0] if hasattr(hint, "__metadata__") else hint
            fields.append((p.name, bare, field(p.default, doc=option.doc, check=option.check)))

        def sample(self, target, proposal=None, n=256, *, seed=0):
            options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
            return fn(target, proposal, n, seed=seed, **options)

        def post_init(self):
            validate(self)
            problem = check(self) if check is not None else None
            if problem:
                raise ConfigError(f"{name}: {problem}")

        title = "".join(part.capitalize() for part in re.split(r"[-_]", name)) + "Sampler"
        entry = dataclasses.make_dataclass(title, fields, bases=(Sampler,), namespace={
            "name": name, "__doc__": summary, "sample": sample, "__post_init__": post_init})
        entry.__module__ = fn.__module__
        SAMPLERS.register(entry, aliases)
        return fn
    return register
