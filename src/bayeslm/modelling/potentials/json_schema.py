"""φ(x) = 1[x is a JSON document valid under a schema], judged on bytes and EOS
(`bayeslm.modelling.potentials.language`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bayeslm.config import field, validate
from bayeslm.modelling.potentials.base import POTENTIALS
from bayeslm.modelling.potentials.language import InLanguage, LanguageSpec, read, schema_of


@POTENTIALS.register
@dataclass(eq=False)
class JSONSchema(LanguageSpec):
    """The continuation, ended by EOS, is JSON valid under a JSON schema (llguidance's subset of draft 2020-12;
    whitespace between tokens as its default allows)."""

    name: ClassVar[str] = "json_schema"
    kind: ClassVar[str] = "json_schema"
    schema: dict | None = field(None, doc="the schema, inline")
    file: str | None = field(None, doc="or a JSON file holding it (relative to the target file)")

    def __post_init__(self):
        validate(self)
        if (self.schema is None) == (self.file is None):
            raise ValueError("json_schema needs exactly one of schema (the schema itself) or file (a JSON file)")

    def source(self):
        return self.schema if self.schema is not None else schema_of(read(self.file, "schema"), self.file)


def json_schema(prior, schema: dict) -> InLanguage:
    """`prior * json_schema(prior, schema)`: the prior conditioned on its continuation being valid JSON under
    `schema`."""
    return JSONSchema(schema=schema).build(prior)
