"""MkDocs hook: the table of rules and the library function each one calls, read from the
workflow at build time.

A page holding the line ``<!-- generated: rule-index -->`` gets, in its place, one row per rule
of ``rules/*.smk``: its file, whether it runs locally, and what it runs. For a ``script:`` rule
that is the function its adapter in ``workflow_scripts/`` hands to ``run_step`` (the rule's own
name, by convention), found by reading the adapter's imports; for a ``shell:`` rule, the shell.
mkdocs.yml names this file under ``hooks:``.

    python docs/hooks/rule_index.py   # print the table
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- generated: rule-index -->"


@dataclass
class Rule:
    name: str
    smk: str
    local: bool
    script: str | None
    shell: bool


def on_page_markdown(markdown, page, config, files):
    """Replace the marker with the table."""
    if MARKER not in markdown:
        return markdown
    from mkdocs.exceptions import PluginError

    root = Path(config.config_file_path).resolve().parent
    try:
        table = render_table(root)
    except (OSError, SyntaxError, ValueError) as err:
        raise PluginError(f"rule index: {err}") from err
    return markdown.replace(MARKER, table)


def read_rules(root: Path) -> list[Rule]:
    """Every ``rule NAME:`` of ``rules/*.smk`` with the directives that say what it runs."""
    rules = []
    for smk in sorted((root / "rules").glob("*.smk")):
        lines = smk.read_text().splitlines()
        for index, line in enumerate(lines):
            match = re.match(r"^(\s*)rule (\w+):", line)
            if not match:
                continue
            indent = len(match[1])
            block = []
            for following in lines[index + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following)
            text = "\n".join(block)
            script = re.search(r"^\s*script:\s*\n\s*[\"']([^\"']+)[\"']", text, re.M)
            rules.append(
                Rule(
                    name=match[2],
                    smk=smk.relative_to(root).as_posix(),
                    local=bool(re.search(r"^\s*localrule:\s*True", text, re.M)),
                    script=script[1] if script else None,
                    shell=bool(re.search(r"^\s*shell:", text, re.M)),
                )
            )
    return rules


def called_function(adapter: Path) -> str | None:
    """``module.function`` that the adapter passes to ``run_step`` (its second argument), or
    the one it calls, resolved through its ``from defaceaudit... import`` lines."""
    tree = ast.parse(adapter.read_text())
    imported = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("defaceaudit"):
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    for node in calls:
        if node.func.id == "run_step" and len(node.args) >= 2:
            target = node.args[1]
            if isinstance(target, ast.Name) and target.id in imported:
                return imported[target.id]
    for node in calls:
        if node.func.id in imported and node.func.id != "run_step":
            return imported[node.func.id]
    return None


def render_table(root: Path) -> str:
    rules = read_rules(root)
    if not rules:
        raise ValueError(f"no rule found under {root / 'rules'}")
    rows = [
        "| rule | file | runs | calls |",
        "|---|---|---|---|",
    ]
    for rule in sorted(rules, key=lambda r: (r.smk, r.name)):
        where = "local" if rule.local else "job"
        if rule.script:
            adapter = (root / "rules" / rule.script).resolve()
            function = called_function(adapter) if adapter.exists() else None
            if function is None:
                calls = f"`{adapter.name}` (no library call found)"
            else:
                same = function.rsplit(".", 1)[1] == rule.name
                calls = f"`{function}`" + ("" if same else " (another name)")
        elif rule.shell:
            calls = "a shell command (its tool, in the rule's container image)"
        else:
            calls = "—"
        rows.append(f"| `{rule.name}` | `{rule.smk}` | {where} | {calls} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(render_table(REPO))
