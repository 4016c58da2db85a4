"""The grammar of a formal language in llguidance's Lark dialect, from a regular expression, a Lark grammar or a
JSON schema, and its syntax check. Neither needs a tokenizer nor torch, so a mistake in a target file's pattern,
grammar or schema is reported before any model loads (`bayeslm.preflight`); `language.py` compiles the grammar
for a model's tokenizer."""

from __future__ import annotations

import json
import re

from bayeslm.config import ConfigError

KINDS = ("regex", "lark", "json_schema")
# llguidance tokenizes the bytes a grammar forces canonically by default, refusing the other spellings the model
# may well sample: off.
NO_FORCING = '%llguidance {"no_forcing": true}\n'


def grammar(kind: str, source) -> str:
    """The Lark grammar (llguidance's dialect) of a regular expression, a Lark grammar or a JSON schema."""
    import llguidance

    if kind == "regex":
        return NO_FORCING + "start: /" + llguidance.regex_to_lark(source, "") + "/\n"
    if kind == "lark":
        return NO_FORCING + source
    if kind == "json_schema":  # a JSON text: the value, with whitespace allowed around it (RFC 8259)
        return NO_FORCING + "start: /[ \\t\\n\\r]*/ value /[ \\t\\n\\r]*/\nvalue: %json " + json.dumps(source) + "\n"
    raise ValueError(f"unknown kind of language {kind!r}; expected one of {', '.join(KINDS)}")


def checked(kind: str, source, tokenizer=None) -> str:
    """The grammar of `source`, or a ConfigError with llguidance's message (without its echo of the grammar
    wrapped as above); given llguidance's `tokenizer`, checked against that tokenizer too."""
    import llguidance

    text = grammar(kind, source)
    error = llguidance.LLMatcher.validate_grammar(text, tokenizer)
    if error:  # its position counts in the wrapped grammar, not the user's text: left out
        raise ConfigError(re.sub(r"^at \d+\(\d+\): ", "", error.split("\n   1 |")[0].strip()))
    return text
