"""The JSON form of behavioural conditions: ``events`` and ``sequence`` conditions.

``{"events": {"aggregate": "count", "name": "order", "where": <event condition>, "window":
{"last": "30 days"}}, "op": "gte", "value": 3}`` is the text ``count(*) FILTER (WHERE event =
'order' AND <event condition> AND timestamp >= now() - INTERVAL 30 DAY) >= 3``. A JSON condition
is turned into that text and parsed, so the two forms cannot mean different things; a tree is
shown in this form only when the form gives back its exact canonical text (otherwise it is a raw
``{"expr": ...}`` leaf).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlglot import exp

from audiences.rules.behaviour import AGGREGATES
from audiences.rules.dialect import Aggregate, Attr, EventField, EventSequence, chain, render
from audiences.rules.json_ops import is_value
from audiences.rules.json_values import Json, Path, literal, value_of
from audiences.rules.normalize import INTERVAL_UNITS

Problem = Callable[[str, Path], Exception]
Piece = Callable[[Json, Path, bool], str]
"""Renders an event condition's JSON as text, in parentheses when it is an OR and ``grouped``."""
"""Builds the error for a malformed piece at a JSON path (``json_values.JsonProblem``)."""

COMPARISONS = {"equals": "=", "not_equals": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
TESTS = {"is_null": "IS NULL", "is_not_null": "IS NOT NULL"}
_TEXT = {**COMPARISONS, **TESTS}
_BY_NODE: dict[type[exp.Expr], str] = {exp.EQ: "equals", exp.NEQ: "not_equals", exp.GT: "gt"}
_BY_NODE[exp.GTE] = "gte"
_BY_NODE |= {exp.LT: "lt", exp.LTE: "lte"}


# --- JSON -> text ----------------------------------------------------------------------------


def behaviour_text(data: Mapping[str, Json], path: Path, piece: Piece, problem: Problem) -> str:
    """The text of an ``events`` or ``sequence`` condition; ``piece`` renders an event
    condition (a JSON condition whose fields are event fields) as text."""
    if "sequence" in data:
        _only(data, {"sequence"}, path, problem)
        return _sequence(data["sequence"], (*path, "sequence"), piece, problem)
    _only(data, {"events", "op", "value", "ago"}, path, problem)
    spec = _object(data["events"], (*path, "events"), problem)
    call = _filtered(
        _call(spec, (*path, "events"), problem), spec, (*path, "events"), piece, problem
    )
    op = data.get("op")
    if op in TESTS:
        return f"{call} {TESTS[op]}"
    if op not in COMPARISONS:
        raise problem(f"'op' is one of {', '.join(_TEXT)}.", (*path, "op"))
    if "ago" in data:
        return f"{call} {COMPARISONS[op]} now() - {_interval(data['ago'], (*path, 'ago'), problem)}"
    if "value" not in data:
        raise problem(f"{op!r} needs a 'value' (or 'ago').", path)
    return f"{call} {COMPARISONS[op]} {render(literal(data['value'], (*path, 'value')))}"


def _call(spec: Mapping[str, Json], path: Path, problem: Problem) -> str:
    name = spec.get("aggregate", "count")
    if name not in (*AGGREGATES, "count_distinct"):
        raise problem(
            f"'aggregate' is one of {', '.join(AGGREGATES)}, count_distinct.", (*path, "aggregate")
        )
    prop = spec.get("property")
    if prop is None:
        if name != "count":
            raise problem(f"{name!r} needs a 'property'.", path)
        return "count(*)"
    if not isinstance(prop, str) or not prop:
        raise problem("'property' is an event field name.", (*path, "property"))
    field = render(EventField(this=prop))
    return f"count(DISTINCT {field})" if name == "count_distinct" else f"{name}({field})"


def _filtered(
    call: str,
    spec: Mapping[str, Json],
    path: Path,
    piece: Piece,
    problem: Problem,
) -> str:
    _only(
        spec, {"aggregate", "property", "name", "where", "window", "steps", "within"}, path, problem
    )
    parts = []
    name = spec.get("name")
    if isinstance(name, str):
        parts.append(f"event = {render(exp.Literal.string(name))}")
    elif isinstance(name, list) and name and all(isinstance(n, str) for n in name):
        listed = ", ".join(render(exp.Literal.string(n)) for n in name)
        parts.append(f"event IN ({listed})")
    elif name is not None:
        raise problem("'name' is an event name or a list of them.", (*path, "name"))
    if "where" in spec:
        alone = name is None and "window" not in spec
        parts.append(piece(spec["where"], (*path, "where"), not alone))
    if "window" in spec:
        parts.append(_window(spec["window"], (*path, "window"), problem))
    return f"{call} FILTER (WHERE {' AND '.join(parts)})" if parts else call


def _sequence(spec: Json, path: Path, piece: Piece, problem: Problem) -> str:
    spec = _object(spec, path, problem)
    steps = spec.get("steps")
    if not isinstance(steps, list) or len(steps) < 2:
        raise problem("'steps' is a list of at least two event conditions.", (*path, "steps"))
    parts = [piece(step, (*path, "steps", i), False) for i, step in enumerate(steps)]
    if "within" in spec:
        parts.append(f"within => {_interval(spec['within'], (*path, 'within'), problem)}")
    call = f"sequence({', '.join(parts)})"
    rest = {key: value for key, value in spec.items() if key not in ("steps", "within")}
    return _filtered(call, rest, path, piece, problem)


def _window(window: Json, path: Path, problem: Problem) -> str:
    window = _object(window, path, problem)
    if set(window) == {"last"}:
        return f"timestamp >= now() - {_interval(window['last'], (*path, 'last'), problem)}"
    if set(window) == {"between"}:
        pair = window["between"]
        if not isinstance(pair, list) or len(pair) != 2:
            raise problem("'between' is [earlier offset, later offset].", (*path, "between"))
        low, high = (_interval(v, (*path, "between", i), problem) for i, v in enumerate(pair))
        return f"timestamp BETWEEN now() - {low} AND now() - {high}"
    if window and set(window) <= {"from", "to"}:
        bounds = [(key, window[key]) for key in ("from", "to") if key in window]
        for key, value in bounds:
            if not isinstance(value, str):
                raise problem(f"'{key}' is an ISO 8601 time.", (*path, key))
        ops = {"from": ">=", "to": "<"}
        return " AND ".join(
            f"timestamp {ops[key]} TIMESTAMP {render(exp.Literal.string(value))}"
            for key, value in bounds
        )
    raise problem('\'window\' is {"last": ...}, {"between": [...]} or {"from", "to"}.', path)


def _interval(value: Json, path: Path, problem: Problem) -> str:
    words = value.split() if isinstance(value, str) else []
    unit = words[1].upper().removesuffix("S") if len(words) == 2 else ""
    if unit not in INTERVAL_UNITS or not words[0].isdigit() or len(words[0]) > 7:
        raise problem('An interval is written "<whole number> <unit>", e.g. "30 days".', path)
    return f"INTERVAL {int(words[0])} {unit}"


def _object(value: Json, path: Path, problem: Problem) -> Mapping[str, Json]:
    if not isinstance(value, Mapping):
        raise problem("Expected an object.", path)
    return value


def _only(data: Mapping[str, Json], allowed: set[str], path: Path, problem: Problem) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise problem(
            f"Unexpected key {extra[0]!r} (allowed: {', '.join(sorted(allowed))}).",
            (*path, extra[0]),
        )


# --- tree -> JSON ----------------------------------------------------------------------------


def behaviour_json(node: exp.Expr, condition: Callable[[exp.Expr], Json]) -> Json | None:
    """The ``events`` / ``sequence`` JSON of a node, or None when the form cannot say it
    exactly. ``condition`` gives an event condition's JSON."""
    if isinstance(node, EventSequence):
        return _sequence_json(node, condition)
    if isinstance(node, exp.Is) and isinstance(node.this, Aggregate):
        spec = _events_json(node.this, condition)
        return None if spec is None else {"events": spec, "op": "is_null"}
    if isinstance(node, exp.Not) and isinstance(node.this, exp.Is):
        inner = behaviour_json(node.this, condition)
        return None if inner is None else {**inner, "op": "is_not_null"}
    op = _BY_NODE.get(type(node))
    if op is None or not isinstance(node.this, Aggregate):
        return None
    spec = _events_json(node.this, condition)
    if spec is None:
        return None
    other = node.expression
    if is_value(other) and not isinstance(other, exp.Cast):
        return {"events": spec, "op": op, "value": value_of(other)}
    ago = _ago(other)
    return None if ago is None else {"events": spec, "op": op, "ago": ago}


def _events_json(node: exp.Expr, condition: Callable[[exp.Expr], Json]) -> Json | None:
    argument = node.args.get("expression")
    spec: dict[str, Json] = {"aggregate": node.name}
    if node.args.get("distinct"):
        spec["aggregate"] = "count_distinct"
    if argument is not None:
        if not isinstance(argument, EventField):
            return None
        spec["property"] = argument.name
    return _filter_json(node, spec, condition)


def _sequence_json(node: exp.Expr, condition: Callable[[exp.Expr], Json]) -> Json | None:
    spec: dict[str, Json] = {"steps": [condition(_attrs(step)) for step in node.expressions]}
    within = node.args.get("within")
    if within is not None:
        spec["within"] = _spelled(within)
    found = _filter_json(node, spec, condition)
    return None if found is None else {"sequence": found}


def _filter_json(
    node: exp.Expr, spec: dict[str, Json], condition: Callable[[exp.Expr], Json]
) -> Json | None:
    where = node.args.get("where")
    items = [] if where is None else chain(where) if isinstance(where, exp.And) else [where]
    if items and _name(items[0]) is not None:
        spec["name"] = _name(items.pop(0))
    window = _window_json(items)
    if window is not None:
        spec["window"], items = window
    if len(items) == 1:
        spec["where"] = condition(_attrs(items[0]))
    elif items:
        spec["where"] = {"all": [condition(_attrs(item)) for item in items]}
    return spec


def _name(node: exp.Expr) -> Json | None:
    if not (isinstance(node.this, EventField) and node.this.name == "event"):
        return None
    if isinstance(node, exp.EQ) and isinstance(node.expression, exp.Literal):
        return node.expression.name if node.expression.is_string else None
    if isinstance(node, exp.In) and all(
        isinstance(v, exp.Literal) and v.is_string for v in node.expressions
    ):
        return [v.name for v in node.expressions]
    return None


def _window_json(items: list[exp.Expr]) -> tuple[Json, list[exp.Expr]] | None:
    if not items:
        return None
    last = items[-1]
    on_time = isinstance(last.this, EventField) and last.this.name == "timestamp"
    if not on_time:
        return None
    if isinstance(last, exp.Between):
        low, high = _ago(last.args["low"]), _ago(last.args["high"])
        return ({"between": [low, high]}, items[:-1]) if low and high else None
    if isinstance(last, exp.GTE) and _ago(last.expression) is not None:
        return {"last": _ago(last.expression)}, items[:-1]
    bounds, rest = {}, list(items)
    for cls, key in ((exp.LT, "to"), (exp.GTE, "from")):
        item = rest[-1] if rest else None
        timed = item is not None and isinstance(item.this, EventField)
        fixed = item is not None and isinstance(item.expression, exp.Cast)
        if isinstance(item, cls) and timed and fixed and item.this.name == "timestamp":
            bounds[key] = item.expression.this.name
            rest.pop()
    if not bounds:
        return None
    return {key: bounds[key] for key in ("from", "to") if key in bounds}, rest


def _ago(node: exp.Expr) -> str | None:
    moved = isinstance(node, exp.Sub) and isinstance(node.this, exp.CurrentTimestamp)
    if moved and isinstance(node.expression, exp.Interval):
        return _spelled(node.expression)
    return None


def _spelled(interval: exp.Expr) -> str:
    amount, unit = interval.this.name, interval.text("unit").lower()
    return f"{amount} {unit}" if amount == "1" else f"{amount} {unit}s"


def _attrs(node: exp.Expr) -> exp.Expr:
    """An event condition with its fields as ``Attr`` nodes, as the JSON condition form has
    them (turned back into event fields when the text is parsed inside the aggregate)."""
    return node.copy().transform(lambda n: Attr(this=n.name) if isinstance(n, EventField) else n)
