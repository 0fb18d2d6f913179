"""A DCI ``search_criteria`` as a condition over households, a sort and a page.

The three query types of the standard read the same attributes (:data:`ATTRIBUTES`):

- ``idtype-value``: ``{"type": "UIN" | "CNIC" | "NID" | "HOUSEHOLD_ID", "value": ...}``;
- ``expression``: ``{"type": "ns:org:QueryType:NoSql", "value": {"expression":
  {"collection": "Group", "query": {"$and": [{"poverty_score": {"$lt": 30}}, ...]}}}}``;
- ``predicate``: ``[{"seq_num": 1, "expression1": {"attribute_name": ..., "operator":
  "lt", "attribute_value": ...}, "condition": "and", "expression2": {...}}, ...]``.

Each becomes a tree of :class:`Test`, :class:`All`, :class:`AnyOf` and :class:`Not`, and
that tree becomes SQL over households ``h`` by :func:`where`: package-owned text in which
every value the caller wrote is a query parameter. An attribute, operator or value NSER does
not know is refused (:class:`Rejected`) with its name; nothing falls back to "everything".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.schemas.cnic import parse_cnic
from app.schemas.geography import CODE_PATTERN
from app.services.dci.envelope import Rejected, check_fields
from app.services.sharing.beneficiaries_sql import AGE, GEO_LEVELS

Param = Callable[[object], str]

FILTER = "rjct.filter.invalid"
CRITERIA = "rjct.search_criteria.invalid"
SORT = "rjct.sort.invalid"
PAGINATION = "rjct.pagination.invalid"

OPERATORS = {"eq": "=", "gt": ">", "lt": "<", "ge": ">=", "le": "<="}
ORDERED = frozenset({"eq", "gt", "lt", "ge", "le", "in"})
EQUALITY = frozenset({"eq", "in"})
MAX_IN = 200
MAX_TESTS = 50
MAX_DEPTH = 8
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
# The deepest record a page may reach (page_number x page_size): deeper pages would cost
# their offset; a longer walk is the beneficiary list's cursor or stream.
MAX_WINDOW = 100_000
BANDS = ("ultra_poor", "very_poor", "poor", "non_poor", "well_off")
# The records NSER answers: households, as the standard's Group.
ENTITIES = frozenset({"Group", "Household", "HouseHold"})
REG_TYPES = frozenset({"ns:org:RegistryType:Social", "ns:org:RegistryType:SR"})
# Accepted and not used: a search reads the registry as it stands.
REG_EVENT_TYPES = frozenset({"REGISTER", "NewHouseHoldMember"})
NOSQL = "ns:org:QueryType:NoSql"
_CODE = re.compile(CODE_PATTERN, re.ASCII)
LIVING = "m.household_id = h.id AND m.deceased_on IS NULL"


# -- values ------------------------------------------------------------------------------


def _number(value: object, low: float, high: float) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"a number from {low:g} to {high:g}")
    if not low <= value <= high:
        raise ValueError(f"a number from {low:g} to {high:g}")
    return Decimal(str(value))


def _integer(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return value

    return parse


def _score(value: object) -> Decimal:
    return _number(value, 0, 100)


def _band(value: object) -> str:
    if value not in BANDS:
        raise ValueError(f"one of {', '.join(BANDS)}")
    return str(value)


def _code(value: object) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise ValueError("a geography code (letters and digits, at most 16)")
    return value


_SEX = {"male": "male", "female": "female", "m": "male", "f": "female"}


def _sex(value: object) -> str:
    sex = _SEX.get(value.lower()) if isinstance(value, str) else None
    if sex is None:
        raise ValueError("male or female (M or F)")
    return sex


def _cnic(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a CNIC (13 digits, or #####-#######-#)")
    return parse_cnic(value)


def _household_id(value: object) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        value = int(value)
    return _integer(1, 2**63 - 1)(value)


# -- attributes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    """A searchable attribute: its operators, how a value is read, and its SQL.

    ``sql(comparison)`` wraps a comparison of ``{x}`` (the attribute's SQL expression) in
    what the attribute needs (a member attribute holds for some living member)."""

    name: str
    operators: frozenset[str]
    value: Callable[[object], object]
    expression: str
    cast: str
    members: bool = False
    level: str | None = None  # a geography level (its codes are checked before any search)

    def bind(self, operator: str, value: object) -> object:
        """The query parameter of a test of this attribute with ``value``."""
        return value

    def sql(self, operator: str, placeholder: str) -> str:
        if operator == "in":
            test = f"{self.expression} = ANY({placeholder}::{self.cast}[])"
        else:
            test = f"{self.expression} {OPERATORS[operator]} {placeholder}::{self.cast}"
        if self.members:
            return f"EXISTS (SELECT 1 FROM members m WHERE {LIVING} AND {test})"
        return test


class _Place(Attribute):
    """A location code: ``eq`` is written as ``in`` of one code (``= ANY`` of a one-element
    array), never ``= code``. PostgreSQL then keeps the column in a page's ``ORDER BY``
    (:func:`order_by` leads with it when the query pins one code) instead of dropping it as
    constant, so the page can walk the level's ``(code, id)`` index in order and stop at its
    last household, rather than walk every household by id from the first."""

    def bind(self, operator: str, value: object) -> object:
        return [value] if operator == "eq" else value

    def sql(self, operator: str, placeholder: str) -> str:
        return f"{self.expression} = ANY({placeholder}::{self.cast}[])"


_SIZE = f"(SELECT count(*) FROM members m WHERE {LIVING})"
_BY_CNIC = (
    "h.id = ANY(ARRAY(SELECT m.household_id FROM members m WHERE m.deceased_on IS NULL "
    "AND m.cnic {test}))"
)


class _Cnic(Attribute):
    def sql(self, operator: str, placeholder: str) -> str:
        test = f"= ANY({placeholder}::text[])" if operator == "in" else f"= {placeholder}::text"
        return _BY_CNIC.format(test=test)


_DEFINED = [
    Attribute("poverty_score", ORDERED, _score, "h.pmt_score", "numeric"),
    Attribute("poverty_band", EQUALITY, _band, "h.poverty_band", "text"),
    *(
        _Place(level, EQUALITY, _code, f"h.{level}_code", "text", level=level)
        for level in GEO_LEVELS
    ),
    Attribute("household_size", ORDERED, _integer(0, 1000), _SIZE, "bigint"),
    Attribute("household_id", EQUALITY, _household_id, "h.id", "bigint"),
    Attribute("age", ORDERED, _integer(0, 150), AGE, "int", members=True),
    Attribute("sex", EQUALITY, _sex, "m.gender", "text", members=True),
    _Cnic("cnic", EQUALITY, _cnic, "m.cnic", "text"),
]
ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in _DEFINED}
# Other names the standard's examples and NSER's own API give the same attributes.
ALIASES = {
    "pmt_score": "poverty_score",
    "poverty_level": "poverty_band",
    "group_size": "household_size",
    "group_identifier": "household_id",
    "member_age": "age",
    "gender": "sex",
    "member_sex": "sex",
    "UIN": "cnic",
    "NID": "cnic",
    "CNIC": "cnic",
}
# idtype-value: the identifier types (case-insensitive) and the attribute each one reads.
ID_TYPES = {"uin": "cnic", "cnic": "cnic", "nid": "cnic", "household_id": "household_id"}
SORTS = {"poverty_score": "h.pmt_score", "pmt_score": "h.pmt_score", "household_id": "h.id"}


def attribute(name: object) -> Attribute:
    found = ATTRIBUTES.get(ALIASES.get(name, name)) if isinstance(name, str) else None
    if found is None:
        shown = name if isinstance(name, str) else type(name).__name__
        raise Rejected(
            FILTER,
            f"attribute {str(shown)[:64]!r} is not supported "
            f"(supported: {', '.join(sorted(ATTRIBUTES))})",
        )
    return found


# -- the condition tree ------------------------------------------------------------------


@dataclass(frozen=True)
class Test:
    attribute: Attribute
    operator: str
    value: object

    def describe(self) -> object:
        value = self.value
        if isinstance(value, Decimal):
            value = float(value)
        elif isinstance(value, list):
            value = [float(v) if isinstance(v, Decimal) else v for v in value]
        return [self.attribute.name, self.operator, value]


@dataclass(frozen=True)
class All:
    parts: tuple[Node, ...]

    def describe(self) -> object:
        return {"and": [p.describe() for p in self.parts]}


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]

    def describe(self) -> object:
        return {"or": [p.describe() for p in self.parts]}


@dataclass(frozen=True)
class Not:
    part: Node

    def describe(self) -> object:
        return {"not": self.part.describe()}


Node = Test | All | AnyOf | Not


def where(node: Node, param: Param) -> str:
    """The node as SQL over households ``h``; every value a parameter."""
    if isinstance(node, Test):
        value = node.attribute.bind(node.operator, node.value)
        return "(" + node.attribute.sql(node.operator, param(value)) + ")"
    if isinstance(node, All):
        return "(" + " AND ".join(where(p, param) for p in node.parts) + ")"
    if isinstance(node, AnyOf):
        return "(" + " OR ".join(where(p, param) for p in node.parts) + ")"
    return f"(NOT {where(node.part, param)})"


def conjuncts(node: Node) -> list[Node]:
    """The parts that must all hold for ``node`` to hold (nested ``All`` flattened)."""
    if isinstance(node, All):
        return [c for p in node.parts for c in conjuncts(p)]
    return [node]


def pinned_level(node: Node) -> str | None:
    """The most specific location level every match of ``node`` has one code at (a test
    of the level with one code, ``eq`` or ``in``, that must hold), or None."""
    pinned = {
        t.attribute.level
        for t in conjuncts(node)
        if isinstance(t, Test)
        and t.attribute.level is not None
        and (t.operator == "eq" or (isinstance(t.value, list) and len(t.value) == 1))
    }
    return next((level for level in reversed(GEO_LEVELS) if level in pinned), None)


def tests(node: Node) -> list[Test]:
    if isinstance(node, Test):
        return [node]
    if isinstance(node, Not):
        return tests(node.part)
    return [t for p in node.parts for t in tests(p)]


def test(name: object, operator: object, value: object) -> Test:
    """One attribute test, its value read and bounded."""
    attr = attribute(name)
    if operator not in attr.operators:
        shown = operator if isinstance(operator, str) else type(operator).__name__
        raise Rejected(
            FILTER,
            f"operator {str(shown)[:16]!r} is not supported for {attr.name} "
            f"(supported: {', '.join(sorted(attr.operators))})",
        )
    try:
        if operator == "in":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN:
                raise ValueError(f"a list of 1 to {MAX_IN} values")
            parsed: object = list(dict.fromkeys(attr.value(v) for v in value))
        else:
            parsed = attr.value(value)
    except ValueError as exc:
        raise Rejected(FILTER, f"{attr.name} {operator}: the value must be {exc}") from None
    return Test(attr, str(operator), parsed)


# -- the query types ---------------------------------------------------------------------


def idtype_value(query: object) -> Node:
    if not isinstance(query, dict):
        raise Rejected(CRITERIA, "an idtype-value query is an object with type and value")
    check_fields(query, ("type", "value"), "query", Rejected)
    kind = query.get("type")
    name = ID_TYPES.get(kind.lower()) if isinstance(kind, str) else None
    if name is None:
        raise Rejected(
            FILTER,
            f"identifier type {str(kind)[:32]!r} is not supported "
            "(UIN, CNIC, NID: a member's CNIC; HOUSEHOLD_ID: a household)",
        )
    if "value" not in query:
        raise Rejected(CRITERIA, "an idtype-value query needs a value")
    return test(name, "eq", query["value"])


EXPRESSION_OPERATORS = {
    "$eq": "eq",
    "$gt": "gt",
    "$lt": "lt",
    "$ge": "ge",
    "$gte": "ge",
    "$le": "le",
    "$lte": "le",
    "$in": "in",
}


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_TESTS

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise Rejected(CRITERIA, f"a query may hold at most {MAX_TESTS} tests")


def _mongo(doc: object, depth: int, budget: _Budget) -> Node:
    if depth > MAX_DEPTH:
        raise Rejected(CRITERIA, f"the expression nests deeper than {MAX_DEPTH}")
    if not isinstance(doc, dict) or not doc:
        raise Rejected(CRITERIA, "each part of an expression is a non-empty object")
    parts: list[Node] = []
    for key, value in doc.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise Rejected(CRITERIA, f"{key} takes a non-empty list")
            inner = tuple(_mongo(v, depth + 1, budget) for v in value)
            parts.append(All(inner) if key == "$and" else AnyOf(inner))
        elif key == "$not":
            parts.append(Not(_mongo(value, depth + 1, budget)))
        elif key.startswith("$"):
            raise Rejected(
                FILTER,
                f"operator {key[:16]!r} is not supported (supported: $and, $or, $not, "
                f"{', '.join(EXPRESSION_OPERATORS)})",
            )
        else:
            attr = attribute(key)
            if not isinstance(value, dict) or not value:
                raise Rejected(
                    CRITERIA, f"{attr.name}: give an operator object, e.g. {{'$eq': value}}"
                )
            for op, operand in value.items():
                operator = EXPRESSION_OPERATORS.get(op)
                if operator is None:
                    raise Rejected(
                        FILTER,
                        f"operator {str(op)[:16]!r} is not supported for {attr.name} "
                        f"(supported: {', '.join(EXPRESSION_OPERATORS)})",
                    )
                budget.spend()
                parts.append(test(key, operator, operand))
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def expression(query: object) -> Node:
    if not isinstance(query, dict):
        raise Rejected(CRITERIA, "an expression query is an object with type and value")
    check_fields(query, ("type", "value"), "query", Rejected)
    kind = query.get("type", NOSQL)
    if kind != NOSQL:
        raise Rejected(
            CRITERIA, f"expression type {str(kind)[:64]!r} is not supported (only {NOSQL!r})"
        )
    value = query.get("value")
    if not isinstance(value, dict):
        raise Rejected(CRITERIA, "query.value must be an object holding the expression")
    check_fields(value, ("expression",), "query.value", Rejected)
    expr = value.get("expression")
    if not isinstance(expr, dict):
        raise Rejected(CRITERIA, "query.value.expression must be an object")
    check_fields(expr, ("collection", "query"), "query.value.expression", Rejected)
    collection = expr.get("collection", "Group")
    if collection not in ENTITIES:
        raise Rejected(
            CRITERIA,
            f"collection {str(collection)[:32]!r} is not supported "
            "(NSER answers households: Group)",
        )
    if "query" not in expr:
        raise Rejected(CRITERIA, "query.value.expression.query is required")
    return _mongo(expr["query"], 0, _Budget())


def _predicate_expression(obj: object, where_: str) -> Test:
    if not isinstance(obj, dict):
        raise Rejected(CRITERIA, f"{where_} must be an object")
    check_fields(obj, ("attribute_name", "operator", "attribute_value"), where_, Rejected)
    for name in ("attribute_name", "operator", "attribute_value"):
        if name not in obj:
            raise Rejected(CRITERIA, f"{where_}.{name} is required")
    return test(obj["attribute_name"], obj["operator"], obj["attribute_value"])


def predicate(query: object) -> Node:
    """Each item is ``expression1`` alone, or ``expression1 and|or expression2``, or
    ``expression1 and not expression2``; the items, in ``seq_num`` order, all hold."""
    if not isinstance(query, list) or not 1 <= len(query) <= MAX_TESTS:
        raise Rejected(CRITERIA, f"a predicate query is a list of 1 to {MAX_TESTS} items")
    items: list[tuple[float, int, Node]] = []
    for i, item in enumerate(query):
        at = f"query[{i}]"
        if not isinstance(item, dict):
            raise Rejected(CRITERIA, f"{at} must be an object")
        check_fields(item, ("seq_num", "expression1", "condition", "expression2"), at, Rejected)
        seq = item.get("seq_num", i)
        if isinstance(seq, bool) or not isinstance(seq, int | float):
            raise Rejected(CRITERIA, f"{at}.seq_num must be a number")
        if "expression1" not in item:
            raise Rejected(CRITERIA, f"{at}.expression1 is required")
        first = _predicate_expression(item["expression1"], f"{at}.expression1")
        condition = item.get("condition")
        node: Node = first
        if condition is None and "expression2" in item:
            raise Rejected(CRITERIA, f"{at}: expression2 needs a condition (and, or, not)")
        if condition is not None:
            if condition not in ("and", "or", "not"):
                raise Rejected(
                    FILTER,
                    f"condition {str(condition)[:16]!r} is not supported (and, or, not)",
                )
            if "expression2" not in item:
                raise Rejected(CRITERIA, f"{at}: condition {condition} needs expression2")
            second = _predicate_expression(item["expression2"], f"{at}.expression2")
            if condition == "and":
                node = All((first, second))
            elif condition == "or":
                node = AnyOf((first, second))
            else:
                node = All((first, Not(second)))
        items.append((float(seq), i, node))
    nodes = tuple(node for _, _, node in sorted(items, key=lambda t: (t[0], t[1])))
    return nodes[0] if len(nodes) == 1 else All(nodes)


QUERY_TYPES: dict[str, Callable[[object], Node]] = {
    "idtype-value": idtype_value,
    "expression": expression,
    "predicate": predicate,
}


# -- sort and page -----------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    size: int
    number: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def sort(value: object) -> tuple[tuple[str, str], ...]:
    """``(attribute, asc|desc)`` pairs; the household id always breaks ties."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 3:
        raise Rejected(SORT, "sort is a list of at most 3 {attribute_name, sort_order}")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise Rejected(SORT, f"sort[{i}] must be an object")
        for name in item:
            if name not in ("attribute_name", "sort_order"):
                raise Rejected(SORT, f"sort[{i}]: unknown field {str(name)[:32]!r}")
        attr = item.get("attribute_name")
        if not isinstance(attr, str) or attr not in SORTS:
            raise Rejected(
                SORT,
                f"sort by {str(attr)[:64]!r} is not supported (supported: {', '.join(SORTS)})",
            )
        order = item.get("sort_order", "asc")
        if order not in ("asc", "desc"):
            raise Rejected(SORT, f"sort_order {str(order)[:16]!r} must be asc or desc")
        out.append((SORTS[attr], str(order)))
    return tuple(out)


def page(value: object) -> Page:
    if value is None:
        return Page(DEFAULT_PAGE_SIZE, 1)
    if not isinstance(value, dict):
        raise Rejected(PAGINATION, "pagination must be an object")
    for name in value:
        if name not in ("page_size", "page_number"):
            raise Rejected(PAGINATION, f"pagination: unknown field {str(name)[:32]!r}")
    if "page_size" not in value:
        raise Rejected(PAGINATION, "pagination.page_size is required")
    try:
        size = _integer(1, MAX_PAGE_SIZE)(value["page_size"])
    except ValueError as exc:
        raise Rejected(PAGINATION, f"pagination.page_size must be {exc}") from None
    try:
        number = _integer(1, MAX_WINDOW)(value.get("page_number", 1))
    except ValueError as exc:
        raise Rejected(PAGINATION, f"pagination.page_number must be {exc}") from None
    if number * size > MAX_WINDOW:
        raise Rejected(
            PAGINATION,
            f"page {number} of {size} reaches past record {MAX_WINDOW}: narrow the query "
            "(or use the beneficiary list's cursor)",
        )
    return Page(size, number)


# -- the criteria ------------------------------------------------------------------------

CRITERIA_FIELDS = (
    "version",
    "reg_type",
    "reg_event_type",
    "query_type",
    "response_entity",
    "query",
    "sort",
    "pagination",
    "consent",
    "authorize",
)


@dataclass(frozen=True)
class Criteria:
    query_type: str
    condition: Node
    order: tuple[tuple[str, str], ...]
    page: Page
    geography: dict[str, list[str]] = field(default_factory=dict)
    # The location level every match shares one code at (see :func:`pinned_level`).
    pinned: str | None = None

    def describe(self) -> dict[str, Any]:
        """What the audit log keeps of the search."""
        return {
            "dci_query_type": self.query_type,
            "dci_condition": self.condition.describe(),
            "dci_sort": [list(o) for o in self.order],
            "dci_page": [self.page.number, self.page.size],
        }


def criteria(value: object) -> Criteria:
    if not isinstance(value, dict):
        raise Rejected(CRITERIA, "search_criteria must be an object")
    check_fields(value, CRITERIA_FIELDS, "search_criteria", Rejected)
    if value.get("version", "1.0.0") != "1.0.0":
        raise Rejected(CRITERIA, "search_criteria.version must be '1.0.0'")
    reg_type = value.get("reg_type")
    if reg_type is not None and reg_type not in REG_TYPES:
        raise Rejected(
            CRITERIA,
            f"reg_type {str(reg_type)[:64]!r} is not this registry "
            f"(one of {', '.join(sorted(REG_TYPES))})",
        )
    event = value.get("reg_event_type")
    if event is not None and event not in REG_EVENT_TYPES:
        raise Rejected(CRITERIA, f"reg_event_type {str(event)[:64]!r} is not supported")
    entity = value.get("response_entity", "Group")
    if entity not in ENTITIES:
        raise Rejected(
            CRITERIA,
            f"response_entity {str(entity)[:64]!r} is not supported (NSER answers Group)",
        )
    for name in ("consent", "authorize"):
        if name in value and not isinstance(value[name], dict):
            raise Rejected(CRITERIA, f"search_criteria.{name} must be an object")
    kind = value.get("query_type")
    parse = QUERY_TYPES.get(kind) if isinstance(kind, str) else None
    if parse is None:
        raise Rejected(
            CRITERIA,
            f"query_type {str(kind)[:32]!r} is not supported (idtype-value, expression, predicate)",
        )
    if "query" not in value:
        raise Rejected(CRITERIA, "search_criteria.query is required")
    condition = parse(value["query"])
    geography: dict[str, list[str]] = {}
    for t in tests(condition):
        if t.attribute.level is not None:
            codes = t.value if isinstance(t.value, list) else [t.value]
            geography.setdefault(t.attribute.level, []).extend(str(c) for c in codes)
    return Criteria(
        str(kind),
        condition,
        sort(value.get("sort")),
        page(value.get("pagination")),
        {level: list(dict.fromkeys(codes)) for level, codes in geography.items()},
        pinned_level(condition),
    )


def order_by(order: tuple[tuple[str, str], ...], pinned: str | None = None) -> str:
    """The ORDER BY of a page: the requested keys (no score last), then the household id.

    With a ``pinned`` level (every match has the same code there) its code leads: the same
    order, which the level's ``(code, id)`` index gives, so that a page sorted by id reads
    the index from the level's first household and stops at its own last one (its cost
    grows with the page's offset and size, never with the households elsewhere)."""
    keys = [f"h.{pinned}_code"] if pinned else []
    keys += [f"{column} {direction.upper()} NULLS LAST" for column, direction in order]
    if not any(column == "h.id" for column, _ in order):
        keys.append("h.id ASC")
    return ", ".join(keys)
