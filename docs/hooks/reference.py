"""mkdocs hook: the reference tables, generated from the code at build time so that they cannot drift from it.

A page asks for a table with a line of its own, ``<!-- reference: NAME -->``, where NAME is one of TABLES.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- reference: ([a-z-]+) -->$", re.MULTILINE)
# Defaults that depend on the machine the docs are built on, stated as the code computes them.
MACHINE_DEFAULTS = {"--workers": "min(4, CPUs)"}


def cell(text: object) -> str:
    """Text for one table cell: pipes escaped, whitespace folded."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def settings_table() -> str:
    from dogbreed import settings

    parts = []
    for section, title in settings.SECTIONS.items():
        rows = [(f"`{s.name}`", s.default, s.meaning) for s in settings.SETTINGS.values() if s.section == section]
        parts.append(f"### {title}\n\n" + table(("variable", "default", "meaning"), rows))
    return "\n\n".join(parts)


def _default(action: argparse.Action) -> str:
    flag = action.option_strings[0]
    if flag in MACHINE_DEFAULTS:
        return MACHINE_DEFAULTS[flag]
    value = action.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f"`{value}`"


def _actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, list[argparse.Action]]]:
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.option_strings and a.help is not argparse.SUPPRESS]
        actions = [a for a in actions if a.dest != "help"]
        if actions:
            yield group.title or "", actions


def parser_table(parser: argparse.ArgumentParser) -> str:
    parts = []
    for title, actions in _actions(parser):
        rows = []
        for action in actions:
            flags = " ".join(f"`{f}`" for f in action.option_strings)
            meaning = action.help or ""
            if action.choices:
                meaning = f"{meaning}; one of {', '.join(f'`{c}`' for c in action.choices)}".lstrip("; ")
            rows.append((flags, _default(action), meaning))
        parts.append(f"### {title[:1].upper()}{title[1:]}\n\n" + table(("flag", "default", "meaning"), rows))
    return "\n\n".join(parts)


def training_arguments_table() -> str:
    from dogbreed.training.cli import get_args_parser

    return parser_table(get_args_parser())


def request_options_table() -> str:
    from dogbreed.serving.inference import Options

    rows = [(f"`{f.name}`", f.metadata["default"], f.metadata["meaning"]) for f in dataclasses.fields(Options)]
    return table(("option", "default", "meaning"), rows)


MAKE_TARGET = re.compile(r"^([a-zA-Z0-9_-]+):.*?## (.*)$")
MAKE_VARIABLE = re.compile(r"^([A-Z][A-Z0-9_]*) \?= ?(.*)$")


def make_targets_table() -> str:
    lines = (REPO_ROOT / "Makefile").read_text().splitlines()
    targets = [(f"`make {m[1]}`", m[2]) for line in lines if (m := MAKE_TARGET.match(line))]
    # A comment block describes the variables that follow it, up to the next blank line or comment.
    groups: list[tuple[list[str], str]] = []
    comment: list[str] = []
    previous_was_variable = False
    for line in lines:
        if line.startswith("# "):
            comment = [] if previous_was_variable else comment
            comment.append(line[2:])
            previous_was_variable = False
        elif m := MAKE_VARIABLE.match(line):
            variable = f"`{m[1]}` = `{m[2]}`" if m[2] else f"`{m[1]}`"
            if previous_was_variable and groups:
                groups[-1][0].append(variable)
            else:
                groups.append(([variable], " ".join(comment)))
            previous_was_variable = True
        else:
            comment, previous_was_variable = [], False
    variables = [("<br>".join(names), meaning) for names, meaning in groups]
    return (
        "### Targets\n\n"
        + table(("target", "what it does"), targets)
        + "\n\n### Variables\n\nSet them on the command line (`make train EPOCHS=3`) or in the environment.\n\n"
        + table(("variables (= default)", "meaning"), variables)
    )


def command_line_reference() -> str:
    """``dogbreed --help`` and each command's, as the installed command prints them."""
    from dogbreed.cli import COMMANDS

    parts = []
    for argv in ([], *([name] for name in COMMANDS)):
        result = subprocess.run(
            [sys.executable, "-m", "dogbreed", *argv, "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "100"},
            check=True,
        )
        title = " ".join(["dogbreed", *argv])
        parts.append(f"### `{title}`\n\n```text\n{result.stdout.rstrip()}\n```")
    return "\n\n".join(parts)


TABLES: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "training-arguments": training_arguments_table,
    "request-options": request_options_table,
    "make-targets": make_targets_table,
    "command-line": command_line_reference,
}


def on_page_markdown(markdown: str, page, config, files) -> str:
    def generate(match: re.Match) -> str:
        name = match[1]
        if name not in TABLES:
            raise ValueError(f"{page.file.src_path}: no reference table {name!r}; known: {', '.join(TABLES)}")
        return TABLES[name]()

    return MARKER.sub(generate, markdown)
