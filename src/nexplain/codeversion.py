"""Code versions for Snakemake `params:`: a rule reruns when the code it runs changes.

Snakemake tracks a rule's script but not the package modules the script imports.
`code_version(script)` hashes the script and, transitively, every `nexplain` module
it imports. It hashes the AST, so comments and formatting do not trigger reruns,
while any change to what the code does (docstrings included) does.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "nexplain"


def _module_file(package_root: Path, dotted: str) -> Path | None:
    """File of module `dotted` ('nexplain.data.world') under package_root (the dir holding nexplain/)."""
    base = package_root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(package_root: Path, path: Path) -> str:
    rel = path.relative_to(package_root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    else:
        parts.pop()  # a module's package is its parent
    return ".".join(parts)


def _imports(tree: ast.AST, package: str | None) -> set[str]:
    """Dotted names a module imports; `from a import b` yields both a and a.b (b may be a module)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and package:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


def _closure(package_root: Path, start: ast.AST, start_package: str | None) -> list[Path]:
    seen: dict[Path, None] = {}
    todo = sorted(_imports(start, start_package))
    while todo:
        dotted = todo.pop()
        # importing a.b.c runs a/__init__ and a/b/__init__ too
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            path = _module_file(package_root, ".".join(parts[:i]))
            if path is None or path in seen:
                continue
            seen[path] = None
            tree = ast.parse(path.read_text(), filename=str(path))
            todo.extend(sorted(_imports(tree, _package_of(package_root, path))))
    return sorted(seen)


def code_files(script: str | Path, package_root: str | Path) -> list[Path]:
    """The package modules `script` depends on, transitively."""
    script, package_root = Path(script), Path(package_root)
    return _closure(package_root, ast.parse(script.read_text(), filename=str(script)), None)


def code_version(script: str | Path, package_root: str | Path) -> str:
    """A short hash of the AST of `script` and of every package module it depends on."""
    script, package_root = Path(script), Path(package_root)
    h = hashlib.sha256()
    for path in [script, *code_files(script, package_root)]:
        tree = ast.parse(path.read_text(), filename=str(path))
        name = path.name if path == script else path.relative_to(package_root).as_posix()
        h.update(name.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()[:16]
