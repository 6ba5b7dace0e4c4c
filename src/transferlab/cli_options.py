"""The ``fit`` command's flags, generated from the methods' settings models: one source of truth for names, types,
choices, defaults and help. A flag is shown in the help panel of the methods that take it."""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Literal, Optional

import typer
from pydantic.fields import FieldInfo

from transferlab.config import FitConfig, flag_name
from transferlab.methods import METHODS, MethodSpec

__all__ = ["method_settings_lines", "methods_markdown", "settings_fields", "with_settings_as_options"]

_SCALARS = (str, int, float, bool, Path)


def settings_fields() -> dict[str, tuple[FieldInfo, list[str]]]:
    """Every setting of every method, in registry order: name -> (its field, the methods that take it)."""
    fields: dict[str, tuple[FieldInfo, list[str]]] = {}
    for spec in METHODS.values():
        for name, info in spec.settings.model_fields.items():
            fields.setdefault(name, (info, []))[1].append(spec.name)
    return fields


def _choices(annotation) -> tuple[str, ...] | None:
    for part in typing.get_args(annotation) or (annotation,):
        if typing.get_origin(part) is Literal:
            return tuple(str(value) for value in typing.get_args(part))
    return None


def _cli_type(annotation) -> type:
    """The type the command line parses a setting as: its scalar type, or ``str`` for choices and lists (comma
    separated; the settings model parses and checks them)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    parts = [part for part in (typing.get_args(annotation) if union else (annotation,)) if part is not type(None)]
    if len(parts) == 1 and parts[0] in _SCALARS:
        return parts[0]
    return str


def _panel(owners: list[str]) -> str:
    if len(owners) == len(METHODS):
        return "Every method"
    if len(owners) > 5:
        return f"{', '.join(owners[:4])}, ... ({len(owners)} methods)"
    return ", ".join(owners)


def _help(info: FieldInfo) -> str:
    text = info.description or ""
    choices = _choices(info.annotation)
    if choices and not all(choice in text for choice in choices):
        text += f" ({' | '.join(choices)})"
    return text


def _switched_on_somewhere(name: str, owners: list[str]) -> bool:
    """Whether a yes/no setting defaults to something other than False for one of the methods taking it (its own
    default or its recipe's): then the command line needs a ``--no-`` flag to switch it off."""
    return any(METHODS[owner].recipe.get(name, METHODS[owner].settings.model_fields[name].default) is not False
               for owner in owners)


def _option(name: str, info: FieldInfo, owners: list[str]) -> inspect.Parameter:
    kind = _cli_type(info.annotation)
    flag = (info.json_schema_extra or {}).get("flag") if isinstance(info.json_schema_extra, dict) else None
    if flag is None:
        flag = flag_name(name, info.alias)
        if kind is bool and _switched_on_somewhere(name, owners):  # a default of True (or "automatic") can be
            flag = f"{flag}/--no-{flag[2:]}"  # switched off
    option = typer.Option(None, *flag.split(" "), help=_help(info), rich_help_panel=_panel(owners))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])


def with_settings_as_options(command, *, exclude: tuple[str, ...] = (), extra: tuple[inspect.Parameter, ...] = ()):
    """``command(**given)`` as a typer command taking every method's settings as flags (``None`` when not given),
    plus ``--config FILE`` and ``--quiet``; without the settings in ``exclude``, with the parameters in ``extra``
    first (commands such as ``compare`` that set some settings themselves)."""
    fields = sorted(settings_fields().items(), key=lambda item: -len(item[1][1]))  # shared settings first
    parameters = [*extra, *(_option(name, info, owners) for name, (info, owners) in fields if name not in exclude)]
    method = next((p for p in parameters if p.name == "method"), None)
    if method is not None:
        method.default.help = (f"the transfer method: {', '.join(METHODS)} (default {method_default()}; "
                               "'transferlab methods' says what each does)")
    parameters += [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=typer.Option(None, help="YAML file with any of these settings; flags override it.")),
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--quiet", "-q", help="Only warnings and the result.")),
    ]

    def wrapper(**given):
        return command(**given)

    wrapper.__name__, wrapper.__doc__ = command.__name__.lstrip("_"), command.__doc__
    wrapper.__signature__ = inspect.Signature(parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def method_settings_lines(spec: MethodSpec) -> list[str]:
    """One line per setting of ``spec``: flag, default (the recipe's when it sets one) and help."""
    lines = []
    for name, info in _own_settings_first(spec):
        if name == "method":
            continue
        lines.append(f"{flag_name(name, info.alias)} [{_default(spec, name, info)}]: {_help(info)}")
    return lines


def _own_settings_first(spec: MethodSpec) -> list[tuple[str, FieldInfo]]:
    """The settings of ``spec``: required ones first, then the method's own (declared last), then shared groups."""
    items = list(spec.settings.model_fields.items())
    return sorted(items, key=lambda item: not item[1].is_required())


def _default(spec: MethodSpec, name: str, info: FieldInfo):
    if name in spec.recipe:
        return spec.recipe[name]
    return "required" if info.is_required() else info.get_default(call_default_factory=True)


def method_default() -> str:
    return FitConfig.model_fields["method"].default


def methods_markdown() -> str:
    """The methods and their own settings as Markdown (``transferlab methods --markdown``: docs/methods.md)."""
    shared = set.intersection(*(set(spec.settings.model_fields) for spec in METHODS.values()))
    fields = next(iter(METHODS.values())).settings.model_fields
    lines = ["# Methods", "", "Generated from the method registry by `transferlab methods --markdown`; "
             "`transferlab methods METHOD` prints the same for one method.", "",
             "Settings every method takes: " + ", ".join(f"`{flag_name(n, fields[n].alias)}`"
                                                        for n in sorted(shared) if n != "method") + ".", ""]
    for spec in METHODS.values():
        lines += [f"## `{spec.name}`", "", spec.summary, "", "| setting | default | what |", "|---|---|---|"]
        for name, info in _own_settings_first(spec):
            if name not in shared:
                lines.append(f"| `{flag_name(name, info.alias)}` | `{_default(spec, name, info)}` | {_help(info)} |")
        lines.append("")
    return "\n".join(lines)
