"""The README stays a short front page, and its links lead somewhere; the site itself is built with --strict by
make docs, which fails on a broken link inside it."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_the_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 200


def test_the_readmes_relative_links_exist():
    targets = [m[1] for m in LINK.finditer(README.read_text()) if "://" not in m[1]]
    assert "docs/getting-started.md" in targets
    missing = [t for t in targets if not (REPO_ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_page_is_in_the_site_navigation():
    nav = (REPO_ROOT / "mkdocs.yml").read_text()
    pages = sorted(str(p.relative_to(REPO_ROOT / "docs")) for p in (REPO_ROOT / "docs").rglob("*.md"))
    assert "reference/settings.md" in pages
    assert [p for p in pages if f": {p}" not in nav] == []
