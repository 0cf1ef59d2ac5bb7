"""MkDocs hook: the configuration reference, generated from the config schema at build time.

The schema (``src/defaceaudit/schemas/config.schema.yaml``) is the one source of every key, its
type, default, bounds and description. A page holding the line
``<!-- generated: config-reference -->`` (docs/reference/configuration.md) gets the schema
rendered in its place when the site is built, so the page cannot go stale: nested, one section
per object, one table row per key. mkdocs.yml names this file under ``hooks:``.

    python docs/hooks/config_reference.py [SCHEMA]   # print the generated Markdown
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path("src/defaceaudit/schemas/config.schema.yaml")
DEFAULT_CONFIG = Path("config.yaml")
MARKER = "<!-- generated: config-reference -->"


# ---------------------------------------------------------------------------------------------
# MkDocs events


def on_page_markdown(markdown, page, config, files):
    """Replace the marker with the reference."""
    if MARKER not in markdown:
        return markdown
    from mkdocs.exceptions import PluginError

    root = Path(config.config_file_path).resolve().parent
    try:
        reference = render_reference(root / SCHEMA, root / DEFAULT_CONFIG)
    except (OSError, yaml.YAMLError, SchemaFormatError) as err:
        raise PluginError(f"config reference: {err}") from err
    return markdown.replace(MARKER, reference)


# ---------------------------------------------------------------------------------------------
# Rendering


class SchemaFormatError(ValueError):
    """The schema uses a construct this renderer does not know (say which, and where)."""


def render_reference(schema_path: Path, config_path: Path | None = None) -> str:
    """The reference in Markdown for the schema at ``schema_path``: its description, the keys
    ``config_path`` (config.yaml) sets, and a section per object of the schema."""
    schema = yaml.safe_load(schema_path.read_text())
    lines = [_prose(schema.get("description", "")), ""]
    if config_path is not None and config_path.exists():
        lines += [
            "`config.yaml`, the demo's configuration that every run reads first (your "
            "`--configfile` goes on top of it), sets these keys away from the defaults below:",
            "",
            "```yaml",
            config_path.read_text().rstrip("\n"),
            "```",
            "",
        ]
    sections = ", ".join(f"[`{key}`](#{_anchor(key)})" for key in schema.get("properties", {}))
    lines += [f"Top-level sections: {sections}.", ""]
    for key, sub in schema.get("properties", {}).items():
        lines += _object_section(schema, key, sub, level=2)
    return "\n".join(lines).rstrip("\n") + "\n"


def _object_section(root: dict, path: str, node: dict, level: int) -> list[str]:
    """A heading for the object at ``path``, its description and conditions, a table of its
    keys, then a section for each nested object (or array of objects)."""
    node = _resolve(root, node, path)
    heading = "#" * min(level, 6)
    lines = [f"{heading} `{path}` {{#{_anchor(path)}}}", ""]
    if node.get("description"):
        lines += [_prose(node["description"]), ""]
    required = node.get("required") or []
    if required:
        lines += ["Required keys: " + ", ".join(f"`{key}`" for key in required) + ".", ""]
    lines += _conditions(root, node, path)
    properties = node.get("properties") or {}
    if not properties:
        return lines
    lines += [
        "| key | type | default | allowed | description |",
        "|---|---|---|---|---|",
    ]
    nested = []
    for key, sub in properties.items():
        sub = _resolve(root, sub, f"{path}.{key}")
        child = f"{path}.{key}"
        kind = _type(sub)
        description = _prose(sub.get("description", ""))
        if _is_object(sub):
            nested.append((child, sub))
            description = _sentence(description, f"See [`{child}`](#{_anchor(child)}).")
        items = sub.get("items")
        if isinstance(items, dict) and _is_object(_resolve(root, items, child)):
            nested.append((f"{child}[]", items))
            link = f"[`{child}[]`](#{_anchor(child + '[]')})"
            description = _sentence(description, f"Each item: see {link}.")
        default = _value(sub["default"]) if "default" in sub else ""
        if _is_object(sub) and sub.get("default") == {}:
            default = "(its keys' defaults)"
        lines.append(
            "| "
            + " | ".join(
                _cell(text)
                for text in (
                    f"`{key}`" + (" (required)" if key in required else ""),
                    kind,
                    default,
                    _allowed(root, sub, child),
                    description,
                )
            )
            + " |"
        )
    lines.append("")
    for child, sub in nested:
        lines += _object_section(root, child, sub, level + 1)
    return lines


def _conditions(root: dict, node: dict, path: str) -> list[str]:
    """``allOf`` of ``if``/``then`` pairs, as sentences."""
    out = []
    for part in node.get("allOf", []) or []:
        if "if" not in part or "then" not in part:
            raise SchemaFormatError(f"{path}: allOf entry without if/then: {part}")
        cond = part["if"]
        tests = []
        for key, sub in (cond.get("properties") or {}).items():
            if "const" in sub:
                tests.append(f"`{key}` is `{_value(sub['const'])}`")
            elif "enum" in sub:
                tests.append(f"`{key}` is one of {_enum(sub['enum'])}")
            else:
                tests.append(f"`{key}` is {_allowed(root, sub, path) or 'set'}")
        then = part["then"]
        needs = [f"`{key}` is required" for key in then.get("required", [])]
        for key, sub in (then.get("properties") or {}).items():
            rule = _allowed(root, sub, f"{path}.{key}")
            kind = sub.get("type")
            if kind:
                rule = ", ".join(filter(None, [_type(sub), rule]))
            if rule:
                needs.append(f"`{key}`: {rule}")
        if not tests or not needs:
            raise SchemaFormatError(f"{path}: cannot describe the condition {part}")
        out.append(f"- When {' and '.join(tests)}: {'; '.join(needs)}.")
    return (["Conditions:", "", *out, ""]) if out else []


def _resolve(root: dict, node: Any, path: str) -> dict:
    """``node`` with a local ``$ref`` replaced by its target (sibling keys, such as a
    ``default``, kept)."""
    if not isinstance(node, dict):
        raise SchemaFormatError(f"{path}: expected a schema object, got {node!r}")
    ref = node.get("$ref")
    if ref is None:
        return node
    if not ref.startswith("#/"):
        raise SchemaFormatError(f"{path}: only local $ref are rendered, not {ref}")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(_resolve(root, target, path))
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _is_object(node: dict) -> bool:
    kinds = node.get("type")
    kinds = [kinds] if isinstance(kinds, str) else (kinds or [])
    return "object" in kinds or ("properties" in node and not kinds)


def _type(node: dict) -> str:
    kinds = node.get("type")
    if kinds is None and "enum" in node:
        kinds = sorted({_json_type(value) for value in node["enum"]})
    if kinds is None and "const" in node:
        kinds = [_json_type(node["const"])]
    if kinds is None:
        for key in ("anyOf", "oneOf"):
            if key in node:
                return " or ".join(_type(alt) for alt in node[key])
        return "any"
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    items = node.get("items")
    shown = []
    for kind in kinds:
        if kind == "array" and isinstance(items, dict) and not _is_object(items):
            shown.append(f"array of {_type(items)}")
        else:
            shown.append(kind)
    return " or ".join(shown)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _allowed(root: dict, node: dict, path: str) -> str:
    """Bounds, enum, pattern and item constraints of ``node`` in words."""
    parts = []
    if "enum" in node:
        parts.append(f"one of {_enum(node['enum'])}")
    if "const" in node:
        parts.append(f"exactly `{_value(node['const'])}`")
    low, high = node.get("minimum"), node.get("maximum")
    xlow, xhigh = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    left = right = ""
    if low is not None:
        left = f"{_value(low)} ≤ "
    elif xlow is not None:
        left = f"{_value(xlow)} < "
    if high is not None:
        right = f" ≤ {_value(high)}"
    elif xhigh is not None:
        right = f" < {_value(xhigh)}"
    if left or right:
        parts.append(f"{left}x{right}")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    if "minLength" in node or "maxLength" in node:
        parts.append(f"length {node.get('minLength', 0)}-{node.get('maxLength', '∞')}")
    low_items, high_items = node.get("minItems"), node.get("maxItems")
    if low_items is not None and low_items == high_items:
        parts.append(f"exactly {low_items} items")
    else:
        if low_items is not None:
            parts.append(f"at least {low_items} item{'s' if low_items != 1 else ''}")
        if high_items is not None:
            parts.append(f"at most {high_items} items")
    if node.get("uniqueItems"):
        parts.append("no duplicates")
    items = node.get("items")
    if isinstance(items, dict):
        items = _resolve(root, items, f"{path}[]")
        if not _is_object(items):
            inner = _allowed(root, items, f"{path}[]")
            if inner:
                parts.append(f"each item: {inner}")
    for key in ("anyOf", "oneOf"):
        if key in node:
            alts = [
                ", ".join(filter(None, [_type(alt), _allowed(root, alt, path)]))
                for alt in node[key]
            ]
            parts.append(("any" if key == "anyOf" else "exactly one") + " of: " + "; ".join(alts))
    return "; ".join(parts)


def _enum(values: list) -> str:
    return ", ".join(f"`{_value(value)}`" for value in values)


def _value(value: Any) -> str:
    """A value as YAML would read it back: null, true, [1, 2], plain strings."""
    if isinstance(value, str):
        return json.dumps(value) if value == "" or value.strip() != value else value
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return json.dumps(value)


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def _prose(text: str) -> str:
    """A schema description as Markdown: whitespace folded; outside its code spans, characters
    Markdown would read as markup (``sub-*/anat/*_desc``, ``acq-<acq>``, ``[, dataset]``)
    escaped."""
    parts = re.split(r"(`[^`]*`)", _fold(text))
    for index in range(0, len(parts), 2):
        plain = _html(parts[index])
        parts[index] = re.sub(r"([*_\[\]\\])", r"\\\1", plain)
    return "".join(parts)


def _sentence(text: str, more: str) -> str:
    """``text`` followed by the sentence ``more``."""
    if not text:
        return more
    return text + ("" if text.endswith((".", "!", "?")) else ".") + " " + more


def _anchor(path: str) -> str:
    """A stable HTML id for a dotted key path (``reface.stage1.training``)."""
    return "cfg-" + re.sub(r"[^A-Za-z0-9_-]+", "-", path.replace("[]", "-items")).strip("-")


def _cell(text: str) -> str:
    """A table cell: no line breaks, pipes escaped. A code span holding a pipe becomes HTML code
    with ``&#124;`` (Python-Markdown's table splitter would cut it), then every pipe left is
    outside code and is escaped."""
    text = re.sub(
        r"`([^`]*\|[^`]*)`",
        lambda m: "<code>" + _html(m[1]).replace("|", "&#124;") + "</code>",
        text,
    )
    return _fold(text).replace("|", "\\|")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    schema_file = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / SCHEMA
    sys.stdout.write(render_reference(schema_file, REPO / DEFAULT_CONFIG))
