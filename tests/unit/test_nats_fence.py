"""Only libs/fenced touches nats-py's private members (item 15 of issue 10): a check over the
syntax trees of the project's own Python files.

nats-py's private names are read from the installed nats-py itself (its `self._x` attributes and
`_x` functions, methods and module names), so a new private member is covered without a list to
keep up. An access `obj._x` with such a name is flagged in every module that imports nats-py, and
in any module where `obj` is called like a connection or subscription (`nc`, `sub`, ...), so a
client passed around untyped is caught too; so are `getattr(obj, "_x")`, `from nats... import _x`
and a subclass of a nats-py class that defines or reads one on `self`.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import nats

ROOT = Path(__file__).resolve().parents[2]
FENCE = ROOT / "libs" / "fenced"
_NATS_LIKE = {"nc", "sub", "subscription", "msg", "js", "client", "nats", "transport"}

# Tests may reach a private member only where nothing public can observe the same (file, name: why).
ALLOWED = {
    ("tests/unit/test_delivery_count.py", "_from_reply"):
        "nats-py's own ack-subject parser is the reference that libs.bus.delivery_count is compared with",
}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def nats_private_names() -> frozenset[str]:
    names: set[str] = set()
    for path in Path(nats.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and _on_self(node):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return frozenset(filter(_is_private, names))


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def _receiver(node: ast.expr) -> str:
    """`nc` for `nc._x`, `self.nc._x`, `running.sub._x`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_")
    return ""


def private_uses(source: str, private: frozenset[str]) -> Iterator[tuple[int, str, str]]:
    """(line, private name, the code) for each use of a nats-py private member in `source`."""
    tree = ast.parse(source)
    imported: set[str] = set()  # local names bound to something of nats-py
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "nats"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "nats":
            imported |= {a.asname or a.name for a in node.names}
            yield from ((node.lineno, a.name, f"import {a.name}") for a in node.names if a.name in private)
    uses_nats = bool(imported)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private:
            if _on_self(node):
                continue  # the project's own attributes; subclasses of nats-py's are checked below
            if uses_nats or _receiver(node.value) in _NATS_LIKE:
                yield node.lineno, node.attr, ast.unparse(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in private):
            yield node.lineno, node.args[1].value, ast.unparse(node)
        elif isinstance(node, ast.ClassDef) and any(
            isinstance(base, ast.Name | ast.Attribute) and ast.unparse(base).split(".")[0] in imported
            for base in node.bases
        ):
            for inner in ast.walk(node):
                if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef) and inner.name in private:
                    yield inner.lineno, inner.name, f"{node.name}.{inner.name} overrides nats-py's"
                elif isinstance(inner, ast.Attribute) and inner.attr in private and _on_self(inner):
                    yield inner.lineno, inner.attr, ast.unparse(inner)


def project_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0].startswith(".") or path.is_relative_to(FENCE):
            continue
        yield path


def test_no_private_member_of_nats_py_is_used_outside_libs_fenced() -> None:
    private = nats_private_names()
    found = []
    for path in project_files():
        relative = path.relative_to(ROOT).as_posix()
        for line, name, what in private_uses(path.read_text(encoding="utf-8"), private):
            if (relative, name) not in ALLOWED:
                found.append(f"{relative}:{line}: {what}")
    assert not found, "nats-py internals outside libs/fenced:\n" + "\n".join(found)


def test_the_check_sees_every_way_in() -> None:
    """The check itself, on the forms it must catch (and the project's own privates it must not)."""
    private = nats_private_names()
    assert {"_pending", "_transport", "_status", "_pending_queue", "_parse_header_lines"} <= private
    caught = """
from nats.aio.client import Client as NATS
from nats.aio.client import _validate_subject
def f(nc, holder):
    nc._pending.append(b"")
    holder.sub._pending_queue = None
    getattr(nc, "_transport")
class Quicker(NATS):
    def _parse_header_lines(self, raw): return self._status
"""
    assert sorted(what for _, _, what in private_uses(caught, private)) == sorted([
        "import _validate_subject", "nc._pending", "holder.sub._pending_queue", "getattr(nc, '_transport')",
        "Quicker._parse_header_lines overrides nats-py's", "self._status",
    ])
    untyped = "def g(nc): return nc._status\n"  # no nats import: caught by the receiver's name
    assert [what for _, _, what in private_uses(untyped, private)] == ["nc._status"]
    own = "class Pool:\n    def _close(self): ...\ndef h(conn): conn._close()\n"  # not nats-py's object
    assert list(private_uses(own, private)) == []
