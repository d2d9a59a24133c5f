"""The Jinja2 environment templates are parsed and rendered in.

Shared by the service (which only parses, at load) and the render workers
(which compile and render). Nothing here runs a template.
"""

from __future__ import annotations

import operator
from typing import Any

import jinja2
from jinja2 import nodes, sandbox

# The sandbox's own bound on range(); multiplication and powers are bounded here.
MAX_RANGE = sandbox.MAX_RANGE


class Environment(sandbox.ImmutableSandboxedEnvironment):
    """Sandboxed, immutable (no ``list.append`` on the alarm's data), strict.

    ``StrictUndefined``: a misspelt variable fails the render with its name,
    rather than sending an empty field; ``is defined``, ``|default`` and
    ``reason_data.get("key")`` still serve optional keys.

    ``*`` and ``**`` are intercepted: a repetition or a power whose result
    would exceed ``max_size`` (characters, items or bits) is refused at once
    rather than allocated, and neither is folded at compile time (an
    intercepted operator is never evaluated when the template is parsed).
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, max_size: int = 65536) -> None:
        super().__init__(
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            auto_reload=False,
            cache_size=0,
        )
        self.max_size = max_size
        # tojson: ASCII only and sorted keys; "<", ">", "&" and "'" as \\u escapes.
        self.policies["json.dumps_kwargs"] = {"sort_keys": True}

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int):
                    if len(seq) * max(times, 0) > self.max_size:
                        raise sandbox.SecurityError(
                            f"a repetition of {len(seq)} by {times} is larger than "
                            f"max_body_bytes ({self.max_size})"
                        )
            return operator.mul(left, right)
        if operator_name == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if abs(left) > 1 and abs(left).bit_length() * right > self.max_size * 8:
                    raise sandbox.SecurityError(f"{left} ** {right} is too large")
            return operator.pow(left, right)
        return super().call_binop(context, operator_name, left, right)


def parse_check(env: Environment, source: str) -> None:
    """Parse a template and check that its filters and tests exist, without
    compiling it (compiling may evaluate constant expressions).

    :raises jinja2.TemplateError: with the cause and the line.
    """
    ast = env.parse(source)
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        known = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            raise jinja2.TemplateAssertionError(
                f"no {kind} named {node.name!r}", node.lineno, None, None
            )
