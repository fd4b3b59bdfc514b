"""JSON schema -> llama.cpp GBNF grammar, with numeric ranges enforced by the grammar's shape.

llama.cpp's schema converter ignores ``minimum``/``maximum`` on numbers (values 2-7 came out of a
schema that said [-1, 1]). A number bounded to [0, 1] or [-1, 1] is therefore rendered as a fixed
decimal pattern (at most three decimals), so an out-of-range value cannot be decoded. Other bounds
keep the plain number rule and are validated after parsing.
"""

from __future__ import annotations

import json
from typing import Any

_UNIT = '("0" ("." [0-9] [0-9]? [0-9]?)? | "1" ("." "0" "0"? "0"?)?)'


def unit_interval_bounds(schema: dict[str, Any]) -> tuple[float, float] | None:
    """(low, high) when a number schema is bounded to [0, 1] or [-1, 1]; else None."""
    if schema.get("type") != "number":
        return None
    low, high = schema.get("minimum"), schema.get("maximum")
    if high == 1 and low in (0, -1):
        return float(low), 1.0
    return None


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """Translate a JSON schema into a GBNF grammar for llama.cpp.

    >>> "0" in schema_to_gbnf({"type": "number", "minimum": 0, "maximum": 1})
    True
    """
    from llama_cpp.llama_grammar import SchemaConverter

    class _BoundedConverter(SchemaConverter):
        def visit(self, schema: dict[str, Any], name: str) -> str:
            bounds = unit_interval_bounds(schema)
            if bounds is None:
                return super().visit(schema, name)
            sign = '"-"? ' if bounds[0] < 0 else ""
            rule_name = name or "root"
            return self._add_rule(f"{rule_name}-unit" if name else rule_name, f"{sign}{_UNIT} space")

    converter = _BoundedConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "schema")
    converter.visit(resolved, "")
    return converter.format_grammar()


def schema_from_response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema inside an OpenAI-style (or llama.cpp-style) ``response_format``; {} = any JSON."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        # OpenAI's nesting, or lm15's canonical flat form {"type", "schema", "name"}.
        nested = response_format.get("json_schema") or {}
        return dict(response_format.get("schema") or nested.get("schema") or {})
    if kind == "json_object":
        return dict(response_format.get("schema") or {})
    return None
