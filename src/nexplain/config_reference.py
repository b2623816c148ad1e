"""The configuration reference of the docs site, generated from the schema and config.yaml.

Every key the schema allows, with what it accepts, whether it is required, the default
config's value and the comment beside it there. `docs/configuration.md` is this module's
output (`python -m nexplain.config_reference > docs/configuration.md`); a test keeps the two
equal, so the reference cannot drift from the schema.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from nexplain.config import schema as load_schema

ROOT = Path(__file__).resolve().parents[2]


def _resolve(node: dict, schema: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[1]], **extra}
    return node


def _accepts(node: dict, schema: dict) -> str:
    node = _resolve(node, schema)
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(_accepts(n, schema) for n in node[key])
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "object" if "properties" in node else "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and "items" in node:
        kind = f"list of {_accepts(node['items'], schema)}"
    bounds = [f"{op} {node[key]}" for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                   ("maximum", "<="), ("exclusiveMaximum", "<"))
              if key in node]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _rows(node: dict, schema: dict, path: str, required: bool, when: str = ""):
    node = _resolve(node, schema)
    if path:
        yield path, _accepts(node, schema), required, when, node.get("description", "")
    for key, sub in node.get("properties", {}).items():
        if sub is not True:
            yield from _rows(sub, schema, f"{path}.{key}" if path else key, key in node.get("required", []), when)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _rows(extra, schema, f"{path}.<name>", False, when)
    items = _resolve(node.get("items", {}), schema) if node.get("type") == "array" else {}
    for key, sub in items.get("properties", {}).items():
        yield from _rows(sub, schema, f"{path}[].{key}", key in items.get("required", []), when)
    for branch in node.get("allOf", []):
        cond = branch.get("if", {}).get("properties", {})
        label = ", ".join(f"{k}: {v['const']}" for k, v in cond.items() if "const" in v)
        for part, tag in (("then", label), ("else", f"not {label}")):
            if part in branch:
                sub = {**branch[part], "properties": {k: v for k, v in branch[part].get("properties", {}).items()
                                                      if k not in cond}}
                for row in _rows(sub, schema, "", False, tag):
                    yield (f"{path}.{row[0]}", *row[1:3], row[3], row[4])


def comments(text: str) -> dict[str, str]:
    """Dotted key -> the comment on its line in a YAML file (block style, two-space indents)."""
    out, stack = {}, []
    for line in text.splitlines():
        m = re.match(r"^( *)([A-Za-z0-9_]+):(.*?)(?:\s+#\s*(.*))?$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key, _, note = len(m.group(1)), m.group(2), m.group(3), m.group(4)
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
        if note:
            out[".".join(k for _, k in stack)] = note.strip()
    return out


def _default(config: dict, path: str):
    node = config
    for part in path.split("."):
        if part == "<name>" and isinstance(node, dict) and node:
            node = next(iter(node.values()))
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node if not isinstance(node, dict) else None


def _applies(config: dict, path: str, when: str) -> bool:
    """Whether the default config's entry meets the row's condition (`kind: world`, `not ...`)."""
    if not when:
        return True
    negate, cond = when.startswith("not "), when.removeprefix("not ")
    key, _, value = cond.partition(": ")
    entry = _default(config, path.split(".<name>.", 1)[0] + ".<name>." + key) if ".<name>." in path else None
    return (str(entry) == value) != negate


def _concrete(path: str, config: dict) -> str:
    """`datasets.<name>.kind` read against the default config's first entry: `datasets.world.kind`."""
    node, parts = config, []
    for part in path.split("."):
        if part == "<name>" and isinstance(node, dict) and node:
            part = next(iter(node))
        parts.append(part)
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return ".".join(parts)


def reference(schema: dict, default_text: str) -> str:
    config = yaml.safe_load(default_text)
    notes = comments(default_text)
    lines = ["# Configuration reference", "",
             "Generated from the schema (`src/nexplain/schemas/config.schema.yaml`) and the default",
             "`config.yaml` by `python -m nexplain.config_reference`; do not edit by hand. `<name>` is a",
             "name you choose (a dataset, a model); `[]` marks the entries of a list. Every key here",
             "reaches the rules through `params:` except `resources` and `mlflow`, so changing one reruns",
             "exactly the jobs that use it. `snakemake --configfile my.yaml` merges `my.yaml` over",
             "`config.yaml`; `nexplain check-config FILE` checks a whole file, layers and concept sets included.",
             "", "| key | accepts | required | default | notes |", "|---|---|---|---|---|"]
    seen = set()
    for path, accepts, required, when, description in _rows(schema, schema, "", True):
        if (path, when) in seen:
            continue
        seen.add((path, when))
        value = _default(config, path) if _applies(config, path, when) else None
        default = "" if value is None else f"`{json.dumps(value)}`"
        note = "; ".join(x for x in (f"when {when}" if when else "", description,
                                     notes.get(_concrete(path, config), "")) if x)
        cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        lines.append(f"| `{path}` | {accepts} | {'yes' if required else ''} | {cell(default)} | {cell(note)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(reference(load_schema(), (ROOT / "config.yaml").read_text()))


if __name__ == "__main__":
    main()
