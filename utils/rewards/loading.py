"""Each --reward_funcs entry to a checked reward function: a built-in name, a user's path/to/file.py:function, or
package.module:function. The syntax and the file's existence are checked with the flags (`parse_entry`); the import
happens when the run builds its reward functions (`load_reward_function`)."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from utils.errors import UserError
from utils.rewards.builtin import BUILTINS, make

# Keywords the rollout passes itself, whatever columns the rows have: a function names one to receive it.
RESERVED = {"answer_lengths": "each answer's token count"}
EXPECTED = ("expected f(prompts, answers, **columns), or f(prompts, answers, *, <column>, ...) naming the columns "
            "(and the reserved keywords " + ", ".join(RESERVED) + ") it reads")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Entry:
    """One --reward_funcs entry, parsed: kind is "builtin", "file" or "module"."""

    text: str
    kind: str
    target: str  # the built-in's name, the file's path or the module's dotted name
    function: str

    @property
    def name(self) -> str:
        """How logs and metrics call it: the function's name."""
        return self.function


@dataclass(frozen=True)
class RewardFunction:
    """A loaded reward function and the keywords it takes: `columns` it must have, `optional` ones (named with a
    default) it gets when the rows have them, or everything when it takes **kwargs."""

    name: str
    entry: str
    func: Callable[..., object]
    columns: tuple[str, ...]
    optional: tuple[str, ...]
    takes_all: bool

    def __call__(self, prompts: list[str], answers: list[str], keywords: dict[str, list]) -> object:
        named = set(self.columns) | set(self.optional)
        given = keywords if self.takes_all else {k: v for k, v in keywords.items() if k in named}
        return self.func(prompts, answers, **given)


def parse_entry(text: str) -> Entry:
    """An entry's kind, target and function, from its syntax alone; a file must exist. Imports nothing."""
    if ":" not in text:
        if text not in BUILTINS:
            raise UserError(f"--reward_funcs {text}: no such built-in reward function; the built-ins are "
                            f"{', '.join(BUILTINS)}, or give path/to/file.py:function or package.module:function")
        return Entry(text, "builtin", text, text)
    target, _, function = text.rpartition(":")
    if not function.isidentifier():
        raise UserError(f"--reward_funcs {text}: {function!r} after the last ':' is not a function name")
    if target.endswith(".py"):
        if not Path(target).is_file():
            raise UserError(f"--reward_funcs {text}: no such file: {target}")
        return Entry(text, "file", target, function)
    if not _DOTTED.fullmatch(target):
        raise UserError(f"--reward_funcs {text}: {target!r} is neither a .py file nor a package.module name")
    return Entry(text, "module", target, function)


def _import_file(entry: Entry) -> ModuleType:
    path = Path(entry.target).resolve()
    # a module name of its own, whatever else is called as the file is
    name = f"reward_file_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as `import` does, so that dataclasses and pickling inside it work
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise UserError(f"--reward_funcs {entry.text}: importing {entry.target} failed: {_one_line(err)}") from None
    return module


def _import_module(entry: Entry) -> ModuleType:
    try:
        return importlib.import_module(entry.target)
    except ModuleNotFoundError as err:
        if err.name and (entry.target + ".").startswith(err.name + "."):  # the module (or its package) is missing
            raise UserError(f"--reward_funcs {entry.text}: no module named {err.name} (is its folder on "
                            "PYTHONPATH?)") from None
        raise UserError(f"--reward_funcs {entry.text}: importing {entry.target} failed: {_one_line(err)}") from None
    except Exception as err:
        raise UserError(f"--reward_funcs {entry.text}: importing {entry.target} failed: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: " + " ".join(str(err).split())


def load_reward_function(text: str, *, format_regex: str | None = None, max_answer_seq_len: int = 256,
                         overlong_buffer: int | None = None) -> RewardFunction:
    """The entry's function, imported and its signature checked; built-ins are built from their flags."""
    entry = parse_entry(text)
    if entry.kind == "builtin":
        func = make(entry.target, format_regex=format_regex, max_answer_seq_len=max_answer_seq_len,
                    overlong_buffer=overlong_buffer)
    else:
        module = _import_file(entry) if entry.kind == "file" else _import_module(entry)
        if not hasattr(module, entry.function):
            defined = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
                             and v.__module__ == module.__name__)
            raise UserError(f"--reward_funcs {text}: {entry.target} has no function {entry.function} (it defines: "
                            f"{', '.join(defined) or 'no functions'})")
        func = getattr(module, entry.function)
        if not callable(func):
            raise UserError(f"--reward_funcs {text}: {entry.function} is a {type(func).__name__}, not a function")
    return _checked(entry, func)


def _checked(entry: Entry, func: Callable[..., object]) -> RewardFunction:
    """The keywords `func` takes, or a UserError when prompts and answers cannot be passed by position and every
    other parameter by name."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as err:
        raise UserError(f"--reward_funcs {entry.text}: cannot read its signature ({err}); {EXPECTED}") from None
    kinds = inspect.Parameter
    positional = [p for p in parameters if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    takes_rest = any(p.kind == kinds.VAR_POSITIONAL for p in parameters)
    later = positional[2:]
    if len(positional) < 2 and not takes_rest or any(
            p.kind == kinds.POSITIONAL_ONLY and p.default is p.empty for p in later):
        shown = ", ".join(str(p) for p in parameters)
        raise UserError(f"--reward_funcs {entry.text}: {entry.function}({shown}) cannot be called with prompts and "
                        f"answers; {EXPECTED}")
    named = [p for p in later if p.kind == kinds.POSITIONAL_OR_KEYWORD] + [
        p for p in parameters if p.kind == kinds.KEYWORD_ONLY]
    return RewardFunction(
        name=entry.name, entry=entry.text, func=func,
        columns=tuple(p.name for p in named if p.default is p.empty),
        optional=tuple(p.name for p in named if p.default is not p.empty),
        takes_all=any(p.kind == kinds.VAR_KEYWORD for p in parameters))
