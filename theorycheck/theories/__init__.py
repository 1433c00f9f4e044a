"""Theories as plug-ins (docs/theories.md).

Built in: ``li2024`` (Li et al., AISTATS 2024), ``tian2023`` (Tian et al., NeurIPS 2023) and
``ntp2024`` (Thrampoulidis, NeurIPS 2024).  A third party adds one through the entry-point group
``theorycheck.theories``: the entry point names an object (or a class, instantiated without
arguments) implementing :class:`theorycheck.theories.base.Theory`, e.g. in pyproject.toml::

    [project.entry-points."theorycheck.theories"]
    mytheory = "mypackage.theory:THEORY"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from theorycheck.errors import InputError

ENTRY_POINT_GROUP = "theorycheck.theories"
BUILTIN = {"li2024": "theorycheck.theories.li2024:THEORY",
           "tian2023": "theorycheck.theories.tian2023:THEORY",
           "ntp2024": "theorycheck.theories.ntp2024:THEORY"}
DEFAULT = "li2024"


def _load(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def installed() -> tuple[dict, list[str]]:
    """({name: theory}, problems): the built-in theories and every entry point of the group.
    A plug-in that fails to load, or does not implement the interface, is left out and named in
    ``problems`` (it never breaks the built-in ones)."""
    from theorycheck.theories.base import Theory

    theories, problems = {}, []
    for name, target in BUILTIN.items():
        theories[name] = _load(target)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            problems.append(f"plug-in {ep.name!r} ({ep.value}) is ignored: the name is a built-in theory's")
            continue
        try:
            obj = ep.load()
            obj = obj() if isinstance(obj, type) else obj
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break the CLI
            problems.append(f"plug-in {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(obj, Theory) or getattr(obj, "name", None) != ep.name:
            problems.append(f"plug-in {ep.name!r} ({ep.value}) is not a theorycheck Theory named {ep.name!r}")
            continue
        theories[ep.name] = obj
    return theories, problems


def get(name: str):
    """The installed theory ``name`` (InputError, exit 2, naming the installed ones otherwise)."""
    theories, problems = installed()
    if name not in theories:
        extra = f" ({'; '.join(problems)})" if problems else ""
        raise InputError(f"no theory named {name!r}; installed: {', '.join(theories)}{extra}; "
                         "see `theorycheck theories`")
    return theories[name]
