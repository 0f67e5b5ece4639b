"""A config from a dict or a file (TOML or JSON, never executed, never unpickled), and back to a dict.

Each value is coerced to its field's type or refused with one line: a file's `steps = 2.9` is never cut
to 2. What the values mean together is judged apart (engine/config/reasons.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib

from engine.config.fields import FIELDS, RunConfig
from engine.errors import ConfigError


def from_dict(d: dict) -> RunConfig:
    unknown = [k for k in d if k not in FIELDS]
    if unknown:
        raise ConfigError(f"unknown config key {shown(unknown[0])}; known keys: {', '.join(FIELDS)}")
    return RunConfig(**{k: _coerce(k, v, type(FIELDS[k].default)) for k, v in d.items()})


def _coerce(key, value, typ):
    """value as typ, or ConfigError: a file's `steps = 2.9` is refused, never cut to 2, and `shuffle = 2` too."""
    if typ is bool:
        words = {
            "1": True,
            "true": True,
            "yes": True,
            "on": True,
            "0": False,
            "false": False,
            "no": False,
            "off": False,
        }
        if isinstance(value, str) and value.lower() in words:
            return words[value.lower()]
        if isinstance(value, (int, float)) and value in (0, 1):  # True and False among them
            return bool(value)
        raise ConfigError(f"{key} must be true or false, got {shown(value)}")
    if typ is tuple:  # a list field (at, rule): its entries, each judged by engine/config/reasons.py
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):  # no True for a number, no lists
        raise ConfigError(f"{key}: {shown(value)} is not a valid {typ.__name__}")
    if typ is int:
        try:
            n = int(value)  # this cuts a float ...
        except (ValueError, OverflowError):
            n = None
        if n is None or (isinstance(value, float) and n != value):  # ... so 2.9 is refused here; 3.0 is 3
            raise ConfigError(f"{key} must be a whole number, got {shown(value)}")
        return n
    try:
        return typ(value)
    except (ValueError, OverflowError):  # float(10**400), str(10**5000)
        raise ConfigError(f"{key}: {shown(value)} is not a valid {typ.__name__}") from None


def shown(value) -> str:
    """value as a one-line message quotes it: its repr (which escapes newlines, NULs and lone surrogates),
    cut short. A huge int is described instead: its repr would be long, or raise past 4300 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a number of {math.floor(math.log10(abs(value))) + 1} digits"
    if not isinstance(value, (str, int, float)) and value is not None:
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(value)} characters)"


def load_file(path: str) -> dict:
    """Read a TOML or JSON config file into a dict (never executed, never unpickled)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {shown(path)}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".json"):
            d = json.loads(raw)
        else:
            d = tomllib.loads(raw.decode("utf-8"))
    except OSError as e:  # not readable
        raise ConfigError(f"config file {shown(path)} cannot be read: {e.strerror}") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; RecursionError: [[[[...
        raise ConfigError(f"{shown(path)} does not parse: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{shown(path)}: expected a table of settings at the top level")
    return d


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)
