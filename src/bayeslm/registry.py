"""Registries: the extension points. Objectives, samplers, potential kinds and rewards are each found by name here.

Every entry is a dataclass whose fields are its options (each with a documentation line, see
`bayeslm.config.field`), so one declaration gives the Python keyword arguments, the YAML keys, the CLI flags, the
generated docs and the error messages. A registry fills itself by importing every module of its package, so a
new built-in is one new file that decorates its class with `REGISTRY.register`; a user's own entry is named by a
dotted path, `package.module:Name`, and needs no registration at all.

A dotted path comes from a config or target file, so it may name only what its author meant bayeslm to run: an
object declared as an entry of that kind (a subclass of `Objective`, `Sampler` or `Potential`; a `Reward`), or,
for a reward function, a function in a module of the user's own project (not the standard library, not an
installed package, not bayeslm's internals). `os:system` is "not an objective", never a call.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import site
import sys
import sysconfig
import typing
from pathlib import Path
from typing import Callable

from bayeslm.config import ConfigError, load, to_dict

DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*|\.[A-Za-z_]\w*)")


def unknown_entry(kind: str, name, names) -> str:
    """The message for a name no registry entry has (shared with `bayeslm.preflight`)."""
    return (f"unknown {kind} {name!r}; expected one of {', '.join(names)}, or a dotted path 'package.module:Name' to "
            "your own")


def import_dotted(dotted: str, what: str, declared: Callable[[object], bool], *, own_functions: bool = False):
    """The object named by an explicit dotted path, 'package.module:name' (or 'package.module.name'), if it is
    `declared` as a `what` (or, with `own_functions`, is defined in a module of the user's own project).

    The text is only ever a name to import, never evaluated: anything but identifiers joined by dots (and one
    colon) is refused before any import, and so is a module of the standard library (importing some of them acts)."""
    if not isinstance(dotted, str) or not DOTTED.fullmatch(dotted):
        raise ConfigError(f"the {what} must be a dotted path 'package.module:name', got {dotted!r}; code is never "
                          "evaluated from a config: put it in a module and name it")
    module_name, _, attr = dotted.partition(":") if ":" in dotted else dotted.rpartition(".")
    if module_name.split(".")[0] in sys.stdlib_module_names:
        raise ConfigError(f"{dotted!r} is not a bayeslm {what}: it names the standard library's {module_name!r}, "
                          f"which a config file may never run. {_MAY_RUN}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import the {what} {dotted!r} ({type(error).__name__}: {error}); install the "
                          "package that holds it or add its directory to PYTHONPATH, and name it as "
                          "'package.module:name'") from error
    except Exception as error:  # noqa: BLE001 - the user's module failed while it was imported (or did not parse)
        raise ConfigError(f"the module {module_name!r} of the {what} {dotted!r} failed while it was imported: "
                          f"{type(error).__name__}: {error}; fix the module (run `python -c 'import "
                          f"{module_name}'` to see where)") from error
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"the module {module_name!r} has no {attr!r} for the {what} {dotted!r}; name an object "
                          "it defines") from None
    if declared(found) or (own_functions and inspect.isfunction(found) and own_project(module)):
        return found
    where = ("a module of your own project" if own_project(module)
             else f"the installed package {module_name.split('.')[0]!r}")
    kind = "class" if isinstance(found, type) else type(found).__name__
    raise ConfigError(f"{dotted!r} is not a bayeslm {what}: it is a {kind} of {where}, not declared as one. "
                      f"{_MAY_RUN}")


_MAY_RUN = ("A config file runs only a built-in entry, a class declared as one (a subclass of bl.Objective, "
            "bl.Sampler or bl.Potential), a bl.Reward, or a reward function in a module of your own project "
            "(docs/extending.md)")


def _installed_roots() -> list[Path]:
    """Where the standard library and installed packages live (any environment's site-packages too)."""
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    paths.add(site.getusersitepackages())
    paths.add(str(Path(__file__).parent))  # bayeslm's own internals: its entries are declared, the rest is not
    return [Path(p).resolve() for p in paths if p]


def own_project(module) -> bool:
    """Whether `module` is the user's own code: a file outside the standard library, every site-packages and
    bayeslm itself (a directory on PYTHONPATH, the working directory, an editable install of their project)."""
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) if spec is not None else None
    if not origin or not Path(origin).is_file():
        return False  # built into the interpreter, frozen or a namespace without a file
    path = Path(origin).resolve()
    if {"site-packages", "dist-packages"} & set(path.parts):
        return False
    return not any(path.is_relative_to(root) for root in _installed_roots())


class Registry:
    """Named entries of one kind (`kind`, e.g. "objective"), the built-ins being the modules of `package`."""

    def __init__(self, kind: str, package: str, declared: Callable[[object], bool], *, own_functions: bool = False):
        """`declared(obj)`: whether an object named by dotted path is an entry of this kind (e.g. a subclass of
        its base); `own_functions`: a plain function of the user's own project is one too (rewards)."""
        self.kind, self.package = kind, package
        self.declared, self.own_functions = declared, own_functions
        self._entries: dict[str, type] = {}
        self._aliases: dict[str, str] = {}  # an old spelling -> the entry's name
        self._loaded = False

    def register(self, entry: type, aliases: tuple[str, ...] = ()) -> type:
        """Class decorator: registers `entry` under its `name` attribute (and `aliases`, spellings that keep
        working without being listed)."""
        name = entry.name
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"two {self.kind}s named {name!r}: {self._entries[name]} and {entry}")
        self._entries[name] = entry
        self._aliases.update(dict.fromkeys(aliases, name))
        return entry

    def register_function(self, fn=None, *, name: str | None = None):
        """Decorator: registers a factory function under its name (or `name`), its keyword arguments being its
        options: the entry is a dataclass of them, derived from the signature, whose `build()` calls `fn`."""
        def register(fn):
            hints = typing.get_type_hints(fn)
            fields = [(p.name, hints.get(p.name, typing.Any)) if p.default is p.empty
                      else (p.name, hints.get(p.name, typing.Any), dataclasses.field(default=p.default))
                      for p in inspect.signature(fn).parameters.values()]
            entry = dataclasses.make_dataclass(
                f"{fn.__name__}_options", fields,
                namespace={"name": name or fn.__name__, "__doc__": fn.__doc__,
                           "build": lambda options: fn(**{f.name: getattr(options, f.name)
                                                          for f in dataclasses.fields(options)})})
            entry.__module__ = fn.__module__
            self.register(entry)
            return fn
        return register(fn) if fn is not None else register

    def entries(self) -> dict[str, type]:
        """Every built-in entry, by name, in the order of their names."""
        if not self._loaded:
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{module.name}")
            self._loaded = True
        return dict(sorted(self._entries.items()))

    def names(self) -> list[str]:
        return list(self.entries())

    def aliases(self) -> dict[str, str]:
        """Each alias, with the name of the entry it stands for."""
        self.entries()
        return dict(sorted(self._aliases.items()))

    def get(self, name: str) -> type:
        """The entry called `name` (or by one of its aliases), or the user's entry at the dotted path `name`."""
        entries = self.entries()
        name = self._aliases.get(name, name)
        if name in entries:
            return entries[name]
        if isinstance(name, str) and DOTTED.fullmatch(name):
            return import_dotted(name, self.kind, self.declared, own_functions=self.own_functions)
        raise ConfigError(unknown_entry(self.kind, name, entries))

    def build(self, spec, where: str | None = None):
        """An entry with its options from a spec as written in YAML: `name`, `{name: {option: value}}` (or either
        with a dotted path for the name); an instance passes through. Options are checked by `config.load`."""
        where = where or self.kind
        if isinstance(spec, str):
            name, options = spec, {}
        elif isinstance(spec, dict) and len(spec) == 1 and isinstance(next(iter(spec)), str):
            (name, options), = spec.items()
        elif not isinstance(spec, (str, dict, list, int, float, bool, type(None))):
            return spec
        else:
            raise ConfigError(f"{where}: expected a {self.kind} name ({', '.join(self.names())}) or a mapping "
                              f"{{name: {{option: value}}}}, got {spec!r}")
        try:
            entry = self.get(name)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
        if dataclasses.is_dataclass(entry):
            return load(entry, options, f"{where}.{name}")
        if options:
            raise ConfigError(f"{where}.{name}: {name!r} declares no options (it is not a dataclass), got {options!r}")
        return entry

    def spec(self, entry) -> dict | str:
        """What `build` reads back: `{name: {option: value}}`, the name being the dotted path of an entry that is
        not registered."""
        cls = entry if isinstance(entry, type) or not dataclasses.is_dataclass(entry) else type(entry)
        registered = self.entries().get(getattr(cls, "name", None)) is cls
        name = cls.name if registered else f"{cls.__module__}:{cls.__qualname__}"
        return {name: to_dict(entry)} if dataclasses.is_dataclass(entry) else name
