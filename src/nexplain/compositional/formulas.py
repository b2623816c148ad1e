"""Left-deep formulas over concept ids, with exact canonical keys.

A formula is a leaf `c` or `(left OP c)` with OP in OR, AND, AND NOT; NOT applies only
to the newly attached concept. `Formula` is frozen; `len(f)` counts leaves as written.

Canonical key, `f.key = (vars, table)`: `vars` are the sorted ids the Boolean function
really depends on (irrelevant ones dropped), `table` its truth table over them as an
int (bit j = value when var i is true iff bit i of j is set). Equal keys <=> logically
equivalent, for any length (cost 2**distinct ids). `==` and `hash` use the key; the
written form is `f.written`. A left-deep formula is false when all its concepts are, so
it is never constant true; constant false has key ((), 0).

Text form: `(water OR river) AND NOT blue`; a left operand that is itself a formula is
parenthesised. Quoting rule: a name is written bare when it is non-empty, has no
whitespace, parentheses or double quotes and is not AND/OR/NOT; otherwise in double
quotes with backslash escapes (`"traffic light"`, `"NOT"`, `"a \\"b\\""`). Without names
concepts are written as their integer ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from nexplain.compositional.masks import (AND, AND_NOT, OPS, OR, Bitmap, Region, bitmap_and, bitmap_andnot,
                                          bitmap_or, combine)

__all__ = ["AND", "AND_NOT", "OPS", "OR", "Formula", "canonical_key", "concepts", "evaluate",
           "evaluate_region", "leaf", "parse", "to_str"]

_BITMAP_OPS = {OR: bitmap_or, AND: bitmap_and, AND_NOT: bitmap_andnot}


@lru_cache(maxsize=32)
def _patterns(k: int) -> tuple[int, tuple[int, ...]]:
    """All-ones table of k vars and, per var i, the table of `var i` itself."""
    full = (1 << (1 << k)) - 1
    return full, tuple((full // ((1 << (1 << i)) + 1)) << (1 << i) for i in range(k))


def _table(leaves, ops, order: list[int]) -> int:
    """Truth table over `order`; ids not in `order` are taken as constant false."""
    full, pats = _patterns(len(order))
    var = {c: pats[i] for i, c in enumerate(order)}
    t = var.get(leaves[0], 0)
    for op, c in zip(ops, leaves[1:]):
        x = var.get(c, 0)
        t = t | x if op == OR else t & x if op == AND else t & (full ^ x)
    return t


def canonical_key(leaves: Sequence[int], ops: Sequence[str]) -> tuple[tuple[int, ...], int]:
    order = sorted(set(leaves))
    t = _table(leaves, ops, order)
    full, pats = _patterns(len(order))
    # var i is irrelevant when both cofactors agree: shift the var-true half onto the var-false half
    relevant = [c for i, c in enumerate(order) if (t & pats[i]) >> (1 << i) != t & (full ^ pats[i])]
    if len(relevant) < len(order):  # the function ignores the others: any constant for them will do
        t = _table(leaves, ops, relevant)
    return tuple(relevant), t


@dataclass(frozen=True, eq=False)
class Formula:
    """Left-deep formula: leaves[0] ops[0] leaves[1] ops[1] ... (evaluated left to right)."""

    leaves: tuple[int, ...]
    ops: tuple[str, ...] = ()
    key: tuple = field(init=False, repr=False)

    def __post_init__(self):
        leaves, ops = tuple(int(c) for c in self.leaves), tuple(self.ops)
        if not leaves or len(ops) != len(leaves) - 1 or any(o not in OPS for o in ops):
            raise ValueError(f"not a left-deep formula: leaves={leaves} ops={ops}")
        if min(leaves) < 0:
            raise ValueError(f"concept ids must be >= 0: {leaves}")
        object.__setattr__(self, "leaves", leaves)
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "key", canonical_key(leaves, ops))

    def __eq__(self, other) -> bool:
        return isinstance(other, Formula) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __len__(self) -> int:
        return len(self.leaves)

    def __str__(self) -> str:
        return to_str(self)

    @property
    def written(self) -> tuple:
        """Total order on written forms (shorter first): the tie-break between equivalent ones."""
        return len(self.leaves), self.leaves, tuple(OPS.index(o) for o in self.ops)

    @property
    def is_constant(self) -> bool:
        return self.key[0] == ()

    @property
    def left(self) -> Formula | None:
        """The formula this one extends (None for a leaf)."""
        return Formula(self.leaves[:-1], self.ops[:-1]) if self.ops else None

    def extend(self, op: str, c: int) -> Formula:
        return Formula(self.leaves + (int(c),), self.ops + (op,))


def leaf(c: int) -> Formula:
    return Formula((int(c),))


def concepts(f: Formula) -> tuple[int, ...]:
    """Distinct concept ids as written, sorted."""
    return tuple(sorted(set(f.leaves)))


# --- text ---

_BARE = re.compile(r'[^\s()"]+')
_KEYWORDS = {"AND", "OR", "NOT"}
_TOKEN = re.compile(r'\s*(?:(?P<p>[()])|"(?P<q>(?:[^"\\]|\\.)*)"|(?P<w>[^\s()"]+))')


def _quote(name: str) -> str:
    if _BARE.fullmatch(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_str(f: Formula, names: Sequence[str] | Mapping[int, str] | None = None) -> str:
    def name(c):
        return _quote(str(c) if names is None else str(names[c]))
    text = name(f.leaves[0])
    for i, (op, c) in enumerate(zip(f.ops, f.leaves[1:])):
        text = f"{text if i == 0 else f'({text})'} {op} {name(c)}"
    return text


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value): kind '(' / ')', 'op' for bare AND/OR/NOT, 'name' otherwise."""
    out, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot read formula at {text[pos:]!r}")
        pos = m.end()
        if m["p"]:
            out.append((m["p"], m["p"]))
        elif m["q"] is not None:
            out.append(("name", re.sub(r"\\(.)", r"\1", m["q"])))
        else:
            out.append(("op" if m["w"] in _KEYWORDS else "name", m["w"]))
    return out


def parse(text: str, names: Sequence[str] | Mapping[int, str] | None = None) -> Formula:
    """Inverse of `to_str` (same names); raises ValueError on anything not left-deep."""
    if names is None:
        ids = None
    else:
        items = names.items() if isinstance(names, Mapping) else enumerate(names)
        ids = {}
        for c, n in items:
            if str(n) in ids:
                raise ValueError(f"duplicate concept name {n!r}")
            ids[str(n)] = c
    toks = _tokens(text)
    f, i = _parse_expr(toks, 0, ids)
    if i != len(toks):
        raise ValueError(f"unexpected {toks[i][1]!r} in {text!r}")
    return f


def _parse_expr(toks, i, ids) -> tuple[Formula, int]:
    f, i = _parse_operand(toks, i, ids)
    while i < len(toks) and toks[i][0] == "op":
        op = toks[i][1]
        if op == "AND" and i + 1 < len(toks) and toks[i + 1] == ("op", "NOT"):
            op, i = AND_NOT, i + 1
        elif op == "NOT":
            raise ValueError("NOT must follow AND")
        right, i = _parse_operand(toks, i + 1, ids)
        if len(right) != 1:
            raise ValueError("right operands must be single concepts (left-deep formulas)")
        f = f.extend(op, right.leaves[0])
    return f, i


def _parse_operand(toks, i, ids) -> tuple[Formula, int]:
    if i >= len(toks):
        raise ValueError("formula ends early")
    kind, value = toks[i]
    if kind == "(":
        f, i = _parse_expr(toks, i + 1, ids)
        if i >= len(toks) or toks[i][0] != ")":
            raise ValueError("missing ')'")
        return f, i + 1
    if kind != "name":
        raise ValueError(f"expected a concept, got {value!r}")
    if ids is None:
        if not value.isdigit():
            raise ValueError(f"expected a concept id, got {value!r}")
        return leaf(int(value)), i + 1
    if value not in ids:
        raise ValueError(f"unknown concept {value!r}")
    return leaf(ids[value]), i + 1


# --- masks ---

def evaluate(f: Formula, store) -> Bitmap:
    """The formula's cells from a `ConceptStore`, listing only images where it can be set."""
    b = store.bitmap(f.leaves[0])
    for op, c in zip(f.ops, f.leaves[1:]):
        b = _BITMAP_OPS[op](b, store.bitmap(c))
    return b


def evaluate_region(f: Formula, store) -> Region:
    """Like `evaluate`, with boxes and all-ones rectangles composed along the formula."""
    r = store.region(f.leaves[0])
    for op, c in zip(f.ops, f.leaves[1:]):
        r = combine(r, op, store.region(c))
    return r
