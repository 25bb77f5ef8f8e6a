"""Validation of hook names against a model's hook points, with close-match suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable
from typing import Any

from hooked_vlm.validation import checked_hook

NamesFilter = str | Iterable[str] | Callable[[str], bool] | None


class UnknownHookError(KeyError):
    """A hook name that the model does not have."""

    def __str__(self) -> str:  # KeyError repr-quotes its message otherwise
        return str(self.args[0])


def check_hook_name(name: str, known: Collection[str]) -> None:
    """Raise :class:`UnknownHookError` naming the closest known hooks when ``name`` is unknown."""
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownHookError(
        f"unknown hook name {name!r}.{hint} List them with model.hook_names or "
        "`hooked-vlm info <model>`; README 'Hook names' documents each family."
    )


def check_fwd_hooks(fwd_hooks: Iterable[tuple[Any, Callable]], known: Collection[str]) -> list:
    """Validate ``[(name_or_filter, fn), ...]``; string names must exist, filters must match.

    Returns the pairs with each ``fn`` wrapped by :func:`hooked_vlm.validation.checked_hook`, so
    a wrong return value names its hook point.
    """
    checked = []
    for item in fwd_hooks:
        if not (isinstance(item, tuple) and len(item) == 2 and callable(item[1])):
            raise TypeError(
                f"fwd_hooks entries must be (hook_name_or_filter, hook_fn) pairs, got {item!r}"
            )
        name, _ = item
        if isinstance(name, str):
            check_hook_name(name, known)
        elif callable(name):
            if not any(name(n) for n in known):
                raise UnknownHookError(
                    "the hook-name filter matches no hook point of this model; list them with "
                    "model.hook_names."
                )
        else:
            raise TypeError(f"hook name must be a str or a callable filter, got {type(name)}")
        checked.append((name, checked_hook(item[1], name if isinstance(name, str) else None)))
    return checked


def names_filter_fn(names_filter: NamesFilter, known: Collection[str]) -> Callable[[str], bool]:
    """Turn ``names_filter`` (None, a name, a list of names or a predicate) into a predicate."""
    if names_filter is None:
        return known.__contains__
    if callable(names_filter):
        return names_filter
    names = [names_filter] if isinstance(names_filter, str) else list(names_filter)
    for name in names:
        check_hook_name(name, known)
    wanted = set(names)
    return wanted.__contains__
