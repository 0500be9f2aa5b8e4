"""Config values typed from the command line, as `--config.KEY=TEXT` types them.

ml_collections' config_flags parses `--config.KEY=TEXT` with the parser of the field's type
(absl's float/int/bool parsers, its tuple parser, strings as given). `parse_value` does the
same for one value, so `jaxclr.sweep`'s `--grid` values and `jaxclr.evaluate`'s overrides of a
saved config are typed exactly as `jaxclr.train` would type them. Errors are one line.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_collections
from absl import flags
from ml_collections.config_flags import tuple_parser

from jaxclr.config.load import unknown_key_message

# The parsers config_flags uses for these field types (ml_collections.config_flags._FIELD_TYPE_TO_PARSER).
PARSERS = {float: flags.FloatParser(), int: flags.IntegerParser(), bool: flags.BooleanParser(),
           tuple: tuple_parser.TupleParser()}

class GridError(ValueError):
    """A bad --grid / --zip or --config.KEY=VALUE value; the message is one line that says what to change."""


@dataclass(frozen=True)
class Value:
    text: str        # as written: passed to jaxclr.train unchanged
    value: object    # typed like the config field (for tables and plots)


def field_type(config: ml_collections.ConfigDict, key: str, flag: str = "--grid ") -> type:
    """The type of the config field `key` (dotted); GridError for an unknown key or a group."""
    message = unknown_key_message(config, key)
    if message:
        raise GridError(f"{flag}{message}")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    if isinstance(node[leaf], ml_collections.ConfigDict):
        raise GridError(f"{flag}{key}: is a group of keys, not a value; sweep one of its keys, e.g. "
                        f"{key}.{next(iter(node[leaf].keys()), '...')}")
    return node.get_type(leaf)


def parse_value(key: str, kind: type, text: str, flag: str = "--grid ") -> Value:
    """`text` parsed as config_flags would parse `--config.KEY=text` for a field of type `kind`."""
    if not text and kind is not str:
        raise GridError(f"{flag}{key}: an empty value; separate values with single commas")
    if kind is str:
        return Value(text, text)
    parser = PARSERS.get(kind)
    if parser is None:
        raise GridError(f"{flag}{key}: fields of type {kind.__name__} cannot be set from the command line")
    try:
        return Value(text, parser.parse(text))
    except (ValueError, TypeError) as e:
        detail = (e.args[0] if e.args and isinstance(e.args[0], str) else str(e)).split("\n")[0]
        raise GridError(f"{flag}{key}={text}: not a valid {kind.__name__} (the type of {key}): {detail}") from None


def typed_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> dict[str, Value]:
    """The `--config.KEY=VALUE` arguments typed like the grid values ({KEY: value}); GridError on
    the first bad one (unknown keys are `override_problems`'s to report)."""
    out = {}
    for arg in overrides:
        key, _, text = arg.removeprefix("--config.").partition("=")
        out[key] = parse_value(key, field_type(config, key, "--config."), text, "--config.")
    return out
