"""Typed recipe configuration: a dataclass, an optional YAML file, then command-line overrides of any field.

A recipe declares its settings as a dataclass whose fields carry a default and a help text (:func:`option`)::

    @dataclass
    class TrainConfig:
        max_steps: int = option(1000, "optimizer steps")
        learning_rate: float = option(1e-4, "peak learning rate")

    cfg = config_from_args(TrainConfig, sys.argv[1:])

and is run as ``python recipe.py --config recipes/configs/debug.yaml --max_steps 20 --learning_rate=3e-4``.
Precedence: dataclass defaults < YAML file < command line. Every field is a flag (``--name value``,
``--name=value``, ``--name-with-dashes``, or an alias declared with the field); values are converted to the field's annotated type
(``int``, ``float``, ``bool``, ``str``, ``X | None``, ``X | Y``, ``list[X]``, ``dict[K, V]``, ``Literal[...]``) before
anything runs, so a typo or a wrong type fails at once with the field (and YAML file) named. One entry of a dictionary
field is set with a dotted flag, ``--model_overrides.hidden_size 128`` (merged over the YAML and default entries);
entries typed ``Any`` are read as YAML (``--data_options.shuffle false`` gives ``False``).

Every mistake (YAML syntax, unknown key or flag, wrong type; out-of-range values in the config's
``__post_init__``) raises one :class:`genolm.errors.ConfigError`, which the recipes print as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from genolm.errors import ConfigError

T = TypeVar("T")

_NONE_WORDS = {"none", "null", "~"}
_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


def option(default: Any, help: str, aliases: Sequence[str] = ()) -> Any:
    """A dataclass field with a default, a help text (shown by ``--help``) and optional extra flag names
    (``aliases``, e.g. ``("learning_rate",)`` for a field ``lr``). Lists are copied per instance."""
    metadata = {"help": help, "aliases": tuple(aliases)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotation of every dataclass field of ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _yaml_value(text: str, name: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: invalid YAML value {text!r}: {_yaml_problem(err)}") from None


def coerce(value: Any, annotation: Any, name: str) -> Any:
    """Convert ``value`` (a YAML value or a command-line string) to ``annotation``; :class:`ConfigError`
    naming ``name`` when it does not fit."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in _NONE_WORDS)
        ):
            return None
        arms = [a for a in args if a is not type(None)]
        if isinstance(value, str):  # a command-line string: try the typed arms before plain str
            arms.sort(key=lambda a: a is str)
        errors = []
        for arg in arms:
            try:
                return coerce(value, arg, name)
            except ValueError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        for choice in args:
            try:
                candidate = coerce(value, type(choice), name)
            except ValueError:
                continue
            if candidate == choice:
                return choice
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(repr, args))}")
    if origin is list:
        (item_type,) = args or (Any,)
        if isinstance(value, str):
            text = value.strip()
            value = (
                _yaml_value(text, name)
                if text.startswith("[")
                else [v.strip() for v in text.split(",") if v.strip()]
            )
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [coerce(v, item_type, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        key_type, item_type = args or (Any, Any)
        if isinstance(value, str) and value.strip().startswith("{"):
            value = _yaml_value(value, name)
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return {coerce(k, key_type, name): coerce(v, item_type, f"{name}.{k}") for k, v in value.items()}
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.lower() in _TRUE_WORDS
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    raise TypeError(f"{name}: unsupported field type {annotation!r}")


def _type_label(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if origin in (Union, types.UnionType):
        label = "|".join(_type_label(a) for a in args if a is not type(None))
        return label + "|null" if type(None) in args else label
    if origin is list:
        return f"list[{_type_label(args[0])}]"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def typed_values(cls: type, values: dict[str, Any], origin: str = "config") -> dict[str, Any]:
    """``values`` converted to the field types of ``cls``; unknown keys and wrong types raise
    :class:`ConfigError` naming ``origin`` (a file, or where else the values came from) and the key."""
    types_ = field_types(cls)
    unknown = [key for key in values if key not in types_]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(types_), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{origin}: unknown {cls.__name__} field {unknown[0]!r}{hint}; "
            f"unknown keys: {', '.join(map(repr, unknown))}; fields: {', '.join(types_)}"
        )
    typed = {}
    for key, value in values.items():
        try:
            typed[key] = coerce(value, types_[key], key)
        except ValueError as err:
            raise ConfigError(f"{origin}: {err}") from None
    return typed


def config_from_dict(cls: type[T], values: dict[str, Any], origin: str = "config") -> T:
    """Build ``cls`` from a mapping of field values (see :func:`typed_values`)."""
    return cls(**typed_values(cls, values, origin))


def load_yaml(cls: type, path: str | Path) -> dict[str, Any]:
    """Typed field values from a YAML mapping; unknown keys and wrong types name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{_yaml_position(path, err)}: invalid YAML: {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    return typed_values(cls, data, str(path))


def _yaml_position(path: Path, err: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN`` (1-based) where PyYAML found the error, or ``FILE`` when it gives no position."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's description of ``err`` on one line, with where the construct it was reading began."""
    problem = getattr(err, "problem", None)
    if not problem:
        return str(err).splitlines()[0]
    context, mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and mark is not None and mark is not getattr(err, "problem_mark", None):
        return f"{problem} ({context} at line {mark.line + 1}, column {mark.column + 1})"
    return f"{problem} ({context})" if context else problem


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors (unknown flag, missing value) raise :class:`ConfigError`."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{message} (see {self.prog} --help)")


def build_parser(cls: type, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with ``--config`` and one ``--field`` flag per dataclass field (values typed later)."""
    parser = _Parser(
        description=description or (cls.__doc__ or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--config", metavar="YAML", help="YAML file of field values (overridden by flags)")
    types_ = field_types(cls)
    for f in dataclasses.fields(cls):
        names = [f.name, *f.metadata.get("aliases", ())]
        flags = list(dict.fromkeys(f"--{n}" for name in names for n in (name, name.replace("_", "-"))))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kwargs: dict[str, Any] = dict(
            dest=f.name,
            default=argparse.SUPPRESS,
            metavar=_type_label(types_[f.name]),
            help=f"{f.metadata.get('help', '')} (default: {default!r})",
        )
        if types_[f.name] is bool:
            kwargs.update(nargs="?", const="true")  # a bare --flag means true
        parser.add_argument(*flags, **kwargs)
    return parser


def _dict_overrides(
    parser: argparse.ArgumentParser, cls: type, extra: Sequence[str]
) -> list[tuple[str, str, str]]:
    """``(field, key, raw value)`` of each ``--field.key VALUE`` / ``--field.key=VALUE`` left over by argparse."""
    types_ = field_types(cls)
    overrides = []
    i = 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item:
            parser.error(f"unrecognized argument {item!r}")
        key, eq, raw = item[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                parser.error(f"{item} needs a value")
            raw, i = extra[i + 1], i + 1
        top, _, sub = key.partition(".")
        top = top.replace("-", "_")
        if top not in types_ or not (types_[top] is dict or typing.get_origin(types_[top]) is dict):
            parser.error(f"--{key}: {top!r} is not a dictionary field of {cls.__name__}")
        overrides.append((top, sub, raw))
        i += 1
    return overrides


def config_from_args(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Build ``cls`` from defaults, the YAML named by ``--config`` (if any), then the other flags
    (``--field.key VALUE`` sets one entry of a dictionary field)."""
    parser = build_parser(cls, description)
    namespace, extra = parser.parse_known_args(argv)
    args = vars(namespace)
    overrides = _dict_overrides(parser, cls, extra)
    yaml_path = args.pop("config", None)
    values = load_yaml(cls, yaml_path) if yaml_path else {}
    types_ = field_types(cls)
    for key, raw in args.items():
        try:
            values[key] = coerce(raw, types_[key], key)
        except ConfigError as err:
            raise ConfigError(f"--{err}") from None
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    for top, sub, raw in overrides:
        if top not in values:
            f = defaults[top]
            values[top] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        key_type, item_type = typing.get_args(types_[top]) or (Any, Any)
        try:
            entry = yaml.safe_load(raw) if item_type is Any else coerce(raw, item_type, f"{top}.{sub}")
            values[top] = {**values[top], coerce(sub, key_type, top): entry}
        except ConfigError as err:
            raise ConfigError(f"--{top}.{sub}: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"--{top}.{sub}: invalid YAML value {raw!r}: {_yaml_problem(err)}") from None
    return cls(**values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (what :func:`save_yaml` writes)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    """The resolved config as YAML text (what :func:`save_yaml` writes)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write the resolved config; ``load_yaml(type(cfg), path)`` reads it back to an equal config."""
    Path(path).write_text(dump_yaml(cfg))


__all__ = [
    "build_parser",
    "coerce",
    "config_from_args",
    "config_from_dict",
    "config_to_dict",
    "dump_yaml",
    "field_types",
    "load_yaml",
    "option",
    "save_yaml",
    "typed_values",
]
