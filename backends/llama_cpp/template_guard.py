"""Bounds on rendering an untrusted chat template: time and size.

Jinja's sandbox stops a template from reaching Python internals, but not from looping
for hours (`range(100000)` nested) or building gigabytes (`'x' * 10**9`). Here:

- every operation that can multiply a size is checked before it runs: the binary
  operators `*`, `+`, `**` and `%`, string methods called from the template (`center`,
  `replace`, `join`, `format`, ...), and the amplifying filters (`replace`, `join`,
  `indent`, `center`, `wordwrap`, `format`); no width or count may exceed the limit;
- every result of an operator, call, filter, `~` concatenation or block of template
  output is checked after it runs, and all of them together count against a budget
  of `FACTOR * max_chars` per render, so a loop cannot pile up many capped strings;
- a deadline is checked on every template-code line (a trace function on the
  rendering thread only, touching template frames only) and on every call, so a loop
  that does nothing still ends on time, and leaves nothing running.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from jinja2 import Environment, TemplateError, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

# What all guarded results of one render may add up to, in units of max_chars.
FACTOR = 4
# Integers a template may build (bits): enough for any arithmetic a chat needs.
MAX_INT_BITS = 4096
MAX_INDENT = 64  # tojson's indent, per level of nesting
_TEMPLATE_FILE = "<template>"
_SIZED = (str, list, tuple, dict, set, frozenset, bytes)
_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")
_NESTED_FIELD = re.compile(r"\{[^{}]*\{")
_DIGITS = re.compile(r"\d+")


class RenderLimitExceeded(TemplateError):
    """The render went over its time or size limit."""


@dataclass(frozen=True, slots=True)
class RenderLimits:
    seconds: float = 2.0  # wall time of one render
    max_chars: int = 4_000_000  # output, and any one string or list built on the way


class _Budget:
    __slots__ = ("deadline", "left", "lines")

    def __init__(self, limits: RenderLimits) -> None:
        self.deadline = time.monotonic() + limits.seconds
        self.left = FACTOR * limits.max_chars
        self.lines = 0


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose renders are bounded by `limits` (see the module)."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, limits: RenderLimits, **options: Any) -> None:
        super().__init__(**options)
        self.limits = limits
        self._local = threading.local()
        self.filters = {name: self._guard_filter(name, f) for name, f in self.filters.items()}
        self.concat = self._concat  # type: ignore[method-assign]

    # -- the render ---------------------------------------------------------------

    def run(self, produce: Callable[[], Iterable[str]]) -> str:
        """Drive `produce` (a template's `generate`) within the limits; the pieces
        joined. Runs on the calling thread, which is traced until it returns."""
        budget = _Budget(self.limits)
        self._local.budget = budget
        previous = sys.gettrace()
        sys.settrace(self._trace)
        try:
            out: list[str] = []
            total = 0
            for piece in produce():
                total += len(piece)
                if total > self.limits.max_chars:
                    raise self._too_big("its output", total)
                out.append(piece)
                self._tick(budget)
            return "".join(out)
        finally:
            sys.settrace(previous)
            self._local.budget = None

    def adopt(self, namespace: dict[str, Any]) -> None:
        """Route a compiled template's `~` concatenations through the size check."""
        namespace["str_join"] = self._str_join
        namespace["markup_join"] = self._markup_join

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != _TEMPLATE_FILE:
            return None  # no line events for Python's own or Jinja's runtime frames
        return self._trace_lines

    def _trace_lines(self, frame: FrameType, event: str, arg: Any) -> Any:
        budget = self._local.budget
        if budget is not None:
            budget.lines += 1
            if budget.lines & 63 == 0:
                self._tick(budget)
        return self._trace_lines

    def _budget(self) -> _Budget | None:
        return getattr(self._local, "budget", None)

    def _tick(self, budget: _Budget) -> None:
        if time.monotonic() > budget.deadline:
            raise RenderLimitExceeded(
                f"the chat template took longer than its limit of {self.limits.seconds} s "
                "(template_timeout)"
            )

    def _too_big(self, what: str, size: int) -> RenderLimitExceeded:
        return RenderLimitExceeded(
            f"the chat template built {what} of {size} characters or items, over its limit "
            f"of {self.limits.max_chars} (template_max_chars)"
        )

    def _size_ok(self, size: int, what: str = "a value") -> None:
        if size > self.limits.max_chars:
            raise self._too_big(what, size)

    def _produced(self, value: Any) -> Any:
        if isinstance(value, _SIZED):
            size = len(value)
            self._size_ok(size)
            budget = self._budget()
            if budget is not None:
                budget.left -= size
                if budget.left < 0:
                    raise RenderLimitExceeded(
                        "the chat template built more than "
                        f"{FACTOR * self.limits.max_chars} characters in all while "
                        "rendering (template_max_chars)"
                    )
        return value

    # -- operators ----------------------------------------------------------------

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, _SIZED) and isinstance(times, int):
                    self._size_ok(len(seq) * max(times, 0))
            if isinstance(left, int) and isinstance(right, int):
                self._int_ok(left.bit_length() + right.bit_length())
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                self._int_ok(max(left.bit_length(), 1) * right)
        elif operator == "+":
            if isinstance(left, _SIZED) and isinstance(right, _SIZED):
                self._size_ok(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            self._check_percent_format(left, right)
        return self._produced(super().call_binop(context, operator, left, right))

    def _int_ok(self, bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise RenderLimitExceeded(
                f"the chat template computed an integer of about {bits} bits "
                f"(the limit is {MAX_INT_BITS})"
            )

    def _check_percent_format(self, fmt: str, args: Any) -> None:
        for match in _FORMAT_WIDTH.finditer(fmt):
            for number in match.groups():
                if number == "*":
                    raise RenderLimitExceeded("the chat template used a '*' width in '%'")
                if number is not None:
                    self._size_ok(int(number) if len(number) < 10 else 10**10, "a '%' width")

    # -- calls and filters --------------------------------------------------------

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = __self._budget()
        if budget is not None:
            __self._tick(budget)
        # str.format comes wrapped by the sandbox (functools.update_wrapper).
        method = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            args = __self._check_str_method(owner, getattr(method, "__name__", ""), args, kwargs)
        return __self._produced(super().call(__context, __obj, *args, **kwargs))

    def _check_str_method(
        self, s: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        values = [*args, *kwargs.values()]
        if name in ("center", "ljust", "rjust", "zfill") and values:
            self._size_ok(_as_int(values[0]))
        elif name == "expandtabs":
            size = _as_int(values[0]) if values else 8
            self._size_ok(len(s) + s.count("\t") * size)
        elif name == "replace" and len(values) >= 2:
            self._check_replace(s, values[0], values[1])
        elif name == "join" and values:
            items = list(values[0])
            self._check_join(s, items)
            return (items, *args[1:])
        elif name in ("format", "format_map"):
            self._check_format_string(s)
        return args

    def _check_replace(self, s: Any, old: Any, new: Any) -> None:
        if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
            hits = s.count(old) if old else len(s) + 1
            self._size_ok(len(s) + hits * max(len(new) - len(old), 0))

    def _check_join(self, sep: Any, items: list[Any]) -> None:
        sizes = sum(len(x) if isinstance(x, _SIZED) else 24 for x in items)
        self._size_ok(sizes + len(str(sep)) * max(len(items) - 1, 0))

    def _check_format_string(self, fmt: str) -> None:
        if _NESTED_FIELD.search(fmt):
            raise RenderLimitExceeded("the chat template used a nested format field")
        for number in _DIGITS.findall(fmt):
            self._size_ok(int(number) if len(number) < 10 else 10**10, "a format width")

    def _guard_filter(self, name: str, filter_: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            budget = self._budget()
            if budget is not None:
                self._tick(budget)
            args = self._check_filter(name, args, kwargs)
            return self._produced(filter_(*args, **kwargs))

        # Keep how Jinja passes the context/environment (pass_context and friends).
        for attr in ("jinja_pass_arg",):
            if hasattr(filter_, attr):
                setattr(guarded, attr, getattr(filter_, attr))
        guarded.__name__ = getattr(filter_, "__name__", name)
        return guarded

    def _check_filter(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        # Widths and counts: no integer argument may exceed the limit.
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool):
                self._size_ok(abs(value), f"a '{name}' argument")
        plain = [a for a in args if not isinstance(a, nodes.EvalContext | Context | Environment)]
        if name == "replace" and len(plain) >= 3:
            self._check_replace(str(plain[0]), plain[1], plain[2])
        elif name == "join" and plain:
            items = list(plain[0])
            sep = plain[1] if len(plain) > 1 else kwargs.get("d", "")
            self._check_join(sep, items)
            args = tuple(items if a is plain[0] else a for a in args)
        elif name == "indent" and plain:
            width = plain[1] if len(plain) > 1 else kwargs.get("width", 4)
            lines = str(plain[0]).count("\n") + 1
            self._size_ok(len(str(plain[0])) + lines * _width(width))
        elif name == "wordwrap" and plain:
            wrap = plain[3] if len(plain) > 3 else kwargs.get("wrapstring") or "\n"
            text = str(plain[0])
            self._size_ok(len(text) * (1 + len(str(wrap))))
        elif name == "format" and plain and isinstance(plain[0], str):
            self._check_percent_format(plain[0], plain[1:])
        elif name in ("tojson", "pprint"):
            indent = plain[1] if len(plain) > 1 else kwargs.get("indent")
            if isinstance(indent, int) and indent > MAX_INDENT:
                raise RenderLimitExceeded(
                    f"the chat template asked '{name}' for an indent over {MAX_INDENT}"
                )
        return args

    # -- concatenation ------------------------------------------------------------

    def _concat(self, pieces: Iterable[Any]) -> str:
        items = list(pieces)
        self._size_ok(sum(len(x) for x in items), "a block of output")
        return self._produced("".join(items))

    def _str_join(self, seq: Iterable[Any]) -> str:
        items = [str(x) for x in seq]
        self._size_ok(sum(len(x) for x in items), "a '~' concatenation")
        return self._produced("".join(items))

    def _markup_join(self, seq: Iterable[Any]) -> str:
        items = list(seq)
        if any(hasattr(x, "__html__") for x in items):
            escaped = [Markup.escape(x) for x in items]
            self._size_ok(sum(len(x) for x in escaped), "a '~' concatenation")
            return self._produced(Markup("").join(escaped))
        return self._str_join(items)


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _width(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    return value if isinstance(value, int) else 0
