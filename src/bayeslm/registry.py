"""Registries: the extension points. Objectives, samplers, potential kinds and rewards are each found by name here.

Every entry is a dataclass whose fields are its options (each with a documentation line, see
`bayeslm.config.field`), so one declaration gives the Python keyword arguments, the YAML keys, the CLI flags, the
generated docs and the error messages. A registry fills itself by importing every module of its package, so a
new built-in is one new file that decorates its class with `REGISTRY.register`; a user's own entry is named by a
dotted path, `package.module:Name`, and needs no registration at all.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import typing

from bayeslm.config import ConfigError, load, to_dict

DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*|\.[A-Za-z_]\w*)")


def unknown_entry(kind: str, name, names) -> str:
    """The message for a name no registry entry has (shared with `bayeslm.preflight`)."""
    return (f"unknown {kind} {name!r}; expected one of {', '.join(names)}, or a dotted path 'package.module:Name' to "
            "your own")


def import_dotted(dotted: str, what: str):
    """The object named by an explicit dotted path, 'package.module:name' (or 'package.module.name').

    The text is only ever a name to import, never evaluated: anything but identifiers joined by dots (and one
    colon) is refused before any import."""
    if not isinstance(dotted, str) or not DOTTED.fullmatch(dotted):
        raise ConfigError(f"the {what} must be a dotted path 'package.module:name', got {dotted!r}; code is never "
                          "evaluated from a config: put it in a module and name it")
    module_name, _, attr = dotted.partition(":") if ":" in dotted else dotted.rpartition(".")
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
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"the module {module_name!r} has no {attr!r} for the {what} {dotted!r}; name an object "
                          "it defines") from None


class Registry:
    """Named entries of one kind (`kind`, e.g. "objective"), the built-ins being the modules of `package`."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._entries: dict[str, type] = {}
        self._loaded = False

    def register(self, entry: type) -> type:
        """Class decorator: registers `entry` under its `name` attribute."""
        name = entry.name
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"two {self.kind}s named {name!r}: {self._entries[name]} and {entry}")
        self._entries[name] = entry
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

    def get(self, name: str) -> type:
        """The entry called `name`, or the user's entry at the dotted path `name`."""
        entries = self.entries()
        if name in entries:
            return entries[name]
        if isinstance(name, str) and DOTTED.fullmatch(name):
            return import_dotted(name, self.kind)
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
