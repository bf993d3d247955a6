"""``--config_overrides "key=value,..."``: what a model config holds, read with Python's literal parser (and
the other ``key=value`` flags: ``--lr_scheduler_kwargs``, :func:`scheduler_kwargs`; the benchmark's method specs).

* :func:`split_entries` splits at the top-level commas only (``depths=[1,1,2,2],embed_dim=48`` is two entries);
* :func:`parse_config_overrides` reads each value with ``ast.literal_eval``: numbers, ``True``/``False``, ``None``,
  quoted strings, lists and tuples (``depths=[1,1,2,2]``, ``image_size=(32,32)``); a bare word is a string
  (``hidden_act=gelu``), and ``true``/``false``/``none``/``null`` are read as the literals. A value that starts
  like a literal but does not parse (``[1,2``), an entry without ``=`` or with an empty key is a one-line
  ``ValueError`` naming the entry and the expected ``key=value`` form;
* :func:`apply_config_overrides` sets them on a 🤗 config: an unknown key names the keys the config has, closest
  matches first (``difflib``); a value of another type than the config's is converted when that loses nothing
  (int to float, an integral float to int), a wrong kind of value is refused (:func:`_typed`), and what the
  config's own field validation refuses (transformers' strict configs) is one line too.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import json
from typing import Any

from huggingface_hub.errors import StrictDataclassError

from .class_labels import few_values
from .preflight import first_line

FLAG = "--config_overrides"
EXAMPLE = "image_size=32,depths=[1,1,2,2],qkv_bias=True"
_OPEN, _CLOSE = "([{", ")]}"
_WORDS = {"true": True, "false": False, "none": None, "null": None}


def split_entries(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes; empty entries (a trailing comma) dropped."""
    entries, current, depth, quote = [], [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        elif char == "," and depth == 0:
            entries.append("".join(current))
            current = []
            continue
        current.append(char)
    entries.append("".join(current))
    return [entry.strip() for entry in entries if entry.strip()]


def _form(example: str) -> str:
    return f'key=value[,key=value...], e.g. "{example}"'


def _value(entry: str, raw: str, flag: str, example: str) -> Any:
    text = raw.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    if not text or text[0] in _OPEN + _CLOSE + "'\"" or text[-1] in _CLOSE + "'\"":
        raise ValueError(
            f"{flag}: {entry!r}: {text!r} is not a value (a number, True/False, None, a string or a list like "
            f"[1,1,2,2]); expected {_form(example)}"
        )
    return text  # a bare word: a string (hidden_act=gelu)


def parse_config_overrides(text: str, flag: str = FLAG, example: str = EXAMPLE) -> dict[str, Any]:
    """``{key: value}`` of ``text`` (see the module); a malformed entry is a one-line ``ValueError`` naming
    ``flag``, the entry and the form (with ``example``)."""
    values: dict[str, Any] = {}
    for entry in split_entries(text):
        key, sep, raw = entry.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{flag}: {entry!r} is not key=value; expected {_form(example)}")
        if key in values:
            raise ValueError(f"{flag}: {key} is given twice ({key}={values[key]!r} and {entry!r}); give it once")
        values[key] = _value(entry, raw, flag, example)
    if not values:
        raise ValueError(f"{flag}: {text!r} holds no key=value entry; expected {_form(example)}")
    return values


def _typed(key: str, value: Any, current: Any, config_name: str, flag: str) -> Any:
    """``value`` in the type of the config's ``current`` value when converting loses nothing (int to float, an
    integral float to int); a boolean for a non-boolean (or the reverse), a fraction for an integer and a word for
    a number or list are refused; anything else (``None``, a tuple for an int image size) is left to the config's
    own field validation."""
    if current is None or value is None or type(value) is type(current):
        return value
    if isinstance(current, bool) or isinstance(value, bool):
        expected = "True or False" if isinstance(current, bool) else type(current).__name__
    elif isinstance(current, float) and isinstance(value, int):
        return float(value)
    elif isinstance(current, int) and isinstance(value, float):
        if value.is_integer():
            return int(value)
        expected = "int"
    elif isinstance(value, str) and not isinstance(current, str):
        expected = "a list" if isinstance(current, (list, tuple)) else type(current).__name__
    else:
        return value
    raise ValueError(
        f"{flag}: {key}={value!r}: {config_name}.{key} is {current!r}, so it expects {expected}, not "
        f"{type(value).__name__} {value!r}"
    )


def unknown_key_message(key: str, keys: list[str], config_name: str, flag: str = FLAG) -> str:
    """One line: ``key`` is not among ``keys``; the closest matches first, then the others in the given order."""
    close = difflib.get_close_matches(key, keys, n=5, cutoff=0.5)
    others = [k for k in keys if k not in close and not k.startswith("_")]
    hint = f"closest: {', '.join(close)}; " if close else ""
    return f"{flag}: {key!r} is not a key of {config_name}; {hint}it has {few_values(others, limit=12)}"


def typed_overrides(text: str, current: dict[str, Any], owner: str, flag: str = FLAG) -> dict[str, Any]:
    """The entries of ``text`` (:func:`parse_config_overrides`), each a key of ``current`` (``{key: value now}``,
    listed in its order by :func:`unknown_key_message`) and in the type of its value (:func:`_typed`); ``owner``
    names them."""
    values = parse_config_overrides(text, flag)
    for key, value in values.items():
        if key not in current:
            raise ValueError(unknown_key_message(key, list(current), owner, flag))
        values[key] = _typed(key, value, current[key], owner, flag)
    return values


def apply_config_overrides(config: Any, text: str, flag: str = FLAG) -> dict[str, Any]:
    """Set the entries of ``text`` on the 🤗 ``config`` (its keys and their aliases, ``attribute_map``), typed as
    its values (:func:`typed_overrides`); returns what was set."""
    from transformers import PretrainedConfig

    keys = {*config.to_dict(), *getattr(config, "attribute_map", {})}
    common = set(PretrainedConfig().to_dict())  # the keys every config has come after the model's own
    ordered = sorted(keys, key=lambda key: (key in common, key))
    current = {key: getattr(config, key) for key in ordered if hasattr(config, key)}
    values = typed_overrides(text, current, type(config).__name__, flag)
    for key, value in values.items():
        try:
            setattr(config, key, value)
        except (ValueError, TypeError, StrictDataclassError) as err:  # transformers' configs validate their fields
            raise ValueError(f"{flag}: {key}={value!r}: {first_line(err.__cause__ or err)}") from err
    return values


#: Arguments of 🤗's schedule functions that the Trainer passes itself, never through ``--lr_scheduler_kwargs``.
_SCHEDULER_OWN = ("optimizer", "num_warmup_steps", "num_training_steps", "last_epoch")


def scheduler_kwargs(value: Any, scheduler_type: Any, flag: str = "--lr_scheduler_kwargs") -> Any:
    """``--lr_scheduler_kwargs`` as a dict: a JSON object (``'{"min_lr_rate": 0.1}'``, as 🤗) or ``key=value``
    entries (:func:`parse_config_overrides`: ``min_lr_rate=0.1``), each key an argument of the
    ``--lr_scheduler_type`` schedule function (else :func:`unknown_key_message`). 🤗 keeps any other string as it
    is (a file path, for its other dict fields), so a schedule would get a string, or nothing when the schedule
    ignores it; a dict or ``None`` is checked the same way and returned."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as err:
                raise ValueError(
                    f"{flag} {text!r} is not a JSON object ({first_line(err)}); expected e.g. "
                    "'{\"min_lr_rate\": 0.1}' or min_lr_rate=0.1"
                ) from err
            if not isinstance(value, dict):
                raise ValueError(f"{flag} {text!r} is not a JSON object")
        else:
            value = parse_config_overrides(text, flag, example="min_lr_rate=0.1") if text else {}
    if not value:
        return value
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
    from transformers.trainer_utils import SchedulerType

    try:
        function = TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(getattr(scheduler_type, "value", scheduler_type))]
    except (ValueError, KeyError):  # an unknown --lr_scheduler_type: 🤗's own check names it
        return value
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return value
    accepted = sorted(name for name in parameters if name not in _SCHEDULER_OWN)
    owner = f"the {SchedulerType(getattr(scheduler_type, 'value', scheduler_type)).value} schedule"
    for key in value:
        if key not in accepted and accepted:
            raise ValueError(unknown_key_message(key, accepted, owner, flag))
        if key not in accepted:
            raise ValueError(f"{flag}: {key!r}: {owner} takes no keyword arguments")
    return value


__all__ = [
    "apply_config_overrides",
    "parse_config_overrides",
    "scheduler_kwargs",
    "split_entries",
    "typed_overrides",
    "unknown_key_message",
]
