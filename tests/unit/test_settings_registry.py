"""Every environment variable the package reads goes through dogbreed.settings and is declared there, so the
settings reference generated from the declarations cannot miss one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from dogbreed import settings
from tests.conftest import REPO_ROOT

SRC = REPO_ROOT / "src"
PACKAGE = SRC / "dogbreed"
# The two modules allowed to read os.environ: the settings module, and the SageMaker contract (SM_* and /opt/ml).
READERS = {PACKAGE / "settings.py", PACKAGE / "sagemaker_env.py"}
# The settings module's readers, and the cloud workflows' env(), which reads through settings.text.
SETTING_READERS = {"text", "flag", "positive_int", "natural_int", "env"}
OWN_VARIABLE = re.compile(r"\bDOGBREED_[A-Z_]+\b")


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def environ_reads(tree: ast.AST) -> list[int]:
    """Lines that read os.environ (get, subscript load) or call os.getenv; writes for child processes are fine."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func)
            if target in ("os.environ.get", "os.getenv"):
                lines.append(node.lineno)
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and ast.unparse(node.value) == "os.environ"
        ):
            lines.append(node.lineno)
    return lines


def names_read_through_settings(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        first = node.args[0]
        if called in SETTING_READERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def test_only_the_settings_and_contract_modules_read_the_environment():
    offenders = {
        f"{path.relative_to(SRC)}:{line}"
        for path in python_files()
        if path not in READERS
        for line in environ_reads(ast.parse(path.read_text()))
    }
    assert not offenders, f"read the environment through dogbreed.settings: {sorted(offenders)}"


def test_the_reader_check_can_fail():
    tree = ast.parse('import os\nport = os.environ.get("PORT")\nhost = os.environ["HOST"]\nos.environ["X"] = "1"')
    assert environ_reads(tree) == [2, 3]


def test_every_variable_read_through_settings_is_declared():
    read = set().union(*(names_read_through_settings(ast.parse(p.read_text())) for p in python_files()))
    assert {"DOGBREED_MEMORY_LIMIT_MB", "TRAIN_IMAGE_URI"} <= read  # the scan sees the readers' calls
    assert read <= set(settings.SETTINGS), f"undeclared: {sorted(read - set(settings.SETTINGS))}"


def test_every_own_variable_anywhere_in_the_sources_is_declared():
    """The launcher's variables for its workers and the MMS guard (Java, log4j2) are declared too."""
    sources = [p for p in SRC.rglob("*") if p.suffix in {".py", ".java", ".xml"}]
    mentioned = set().union(*(OWN_VARIABLE.findall(p.read_text()) for p in sources))
    assert "DOGBREED_QUEUED_BODY_BYTES" in mentioned
    assert mentioned <= set(settings.SETTINGS), f"undeclared: {sorted(mentioned - set(settings.SETTINGS))}"


@pytest.mark.parametrize("setting", settings.SETTINGS.values(), ids=lambda s: s.name)
def test_each_declaration_is_complete(setting):
    assert setting.section in settings.SECTIONS
    assert setting.default and setting.meaning


def test_text_falls_back_on_unset_and_empty(monkeypatch):
    monkeypatch.setenv("DOGBREED_UNPACK_DIR", "")
    assert settings.text("DOGBREED_UNPACK_DIR", "/fallback") == "/fallback"
    monkeypatch.setenv("DOGBREED_UNPACK_DIR", "/data")
    assert settings.text("DOGBREED_UNPACK_DIR", "/fallback") == "/data"
