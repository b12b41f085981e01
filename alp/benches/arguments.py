"""A bench's command-line flags, derived from its typed options: each default and help text written once.

Every field of the options model becomes ``--field-name``; the flag's default is None, so a flag left out
leaves the model's own default in place (:func:`options_from`). ``bool`` fields are switches, ``Literal``
fields take their choices, ``list[int]`` fields take comma-separated numbers.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

Options = TypeVar("Options", bound=BaseModel)


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def add_option_flags(parser: argparse.ArgumentParser, options: type[BaseModel]) -> None:
    """One flag per field of ``options``."""
    for name, info in options.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = info.description or ""
        if info.default is not PydanticUndefined and info.default is not None and info.annotation is not bool:
            help_text = f"{help_text} (default {info.default})".strip()
        kind = _without_none(info.annotation)
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=None, help=help_text or None)
        elif get_origin(kind) is Literal:
            parser.add_argument(flag, choices=get_args(kind), default=None, help=help_text or None)
        elif get_origin(kind) is list:
            parser.add_argument(flag, type=_int_list, default=None, metavar="N,N,...", help=help_text or None)
        else:
            parser.add_argument(flag, type=str if kind is Path else kind, default=None, help=help_text or None)


def options_from(args: argparse.Namespace, options: type[Options]) -> Options:
    """The options the flags of :func:`add_option_flags` gave; the model's defaults for the others."""
    given = {name: getattr(args, name) for name in options.model_fields if getattr(args, name, None) is not None}
    return options.model_validate(given)


def add_bench(subparsers: argparse._SubParsersAction, name: str, *, help: str,  # type: ignore[type-arg]
              options: type[BaseModel], main: Callable[[argparse.Namespace], int], json_help: str) -> None:
    """``alp bench <name>``: its option flags, ``--json`` (how the result prints), and its entry."""
    parser = subparsers.add_parser(name, help=help)
    parser.add_argument("--json", action="store_true", help=json_help)
    add_option_flags(parser, options)
    parser.set_defaults(func=main)
