"""The sidebar's widgets drawn from RunConfig's field metadata (engine/config/fields.py knob): each under
the key state.CFG + the field's name, its choices and bounds from the field, its help from help_for,
and greyed out, its help the reason, when the configuration does not use it (why: field -> reason).

Keyword arguments go to the Streamlit widget and win over the metadata (a label's format, a bound the
widget cannot reach: beta1's 1 is excluded, so its box stops at 0.9999)."""

from __future__ import annotations

import dataclasses

from engine.config.fields import RunConfig, choices_for, help_for

from .state import CFG

JS_INT = 2**53 - 1  # the largest integer the browser's number box holds exactly (Streamlit refuses more)


def bounds(name: str) -> dict:
    """min_value and max_value for a number field, from its knob's bounds. An integer bound beyond what the
    browser holds is left out (the seed's): validate() still refuses past it, in one line."""
    field = next(f for f in dataclasses.fields(RunConfig) if f.name == name)
    if not field.metadata["bounds"]:
        return {}
    lo, hi = field.metadata["bounds"]
    if isinstance(field.default, int):
        return {k: int(v) for k, v in (("min_value", lo), ("max_value", hi)) if abs(v) <= JS_INT}
    return {"min_value": float(lo), "max_value": float(hi)}


def _common(name: str, why: dict, kw: dict) -> dict:
    return {"key": CFG + name, "disabled": name in why, "help": why.get(name) or help_for(name), **kw}


def number(where, name: str, label: str, why: dict, **kw):
    return where.number_input(label, **_common(name, why, {**bounds(name), **kw}))


def choice(where, name: str, label: str, why: dict, **kw):
    """A selectbox over the field's choices (or options=...)."""
    options = kw.pop("options", None) or choices_for(name)
    return where.selectbox(label, options, **_common(name, why, kw))


def check(where, name: str, label: str, why: dict, **kw):
    return where.checkbox(label, **_common(name, why, kw))


def text(where, name: str, label: str, why: dict, **kw):
    return where.text_input(label, **_common(name, why, kw))


def reason(where, text: str | None):
    """The reason a control above is greyed out, in grey under it."""
    if text:
        where.caption(f":grey[:material/block: Not used: {text}]")
