"""The docs/ folder and the code's citations of it: comments cite docs/<name>.md[#section], never a document that is
not in the repository, and every cited file and section exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CODE_FOLDERS = ("core", "next3d_blender", "bench", "scripts", "tests", "tools")
# The reference document the old comments cited by section number ("spec" + section sign); built from parts so that
# this file does not match itself.
OLD_CITATION = re.compile("spec \u00a7|spec (?:sections?|appendix|M\\d)|spec \\d", re.IGNORECASE)
DOC_CITATION = re.compile(r"docs/([A-Za-z0-9_\-]+\.md)(?:#([\w\-]+))?")
MD_LINK = re.compile(r"\]\(([A-Za-z0-9_\-]+\.md)(?:#([\w\-]+))?\)")


def _python_files():
    for folder in CODE_FOLDERS:
        # os.walk does not descend into symbolic links (next3d_blender's links to core/ and addon_assets/).
        for dirpath, dirnames, filenames in os.walk(ROOT / folder):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
            for name in filenames:
                if name.endswith(".py"):
                    yield Path(dirpath, name)


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces turned into hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set:
    anchors, seen, fenced = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"#{1,6} (.+)", line)
        if m and not fenced:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _check_target(name: str, anchor: str, where: str, problems: list) -> None:
    target = DOCS / name
    if not target.is_file():
        problems.append(f"{where}: docs/{name} does not exist")
    elif anchor and anchor not in _anchors(target):
        problems.append(f"{where}: docs/{name} has no section #{anchor}")


def test_docs_folder_exists():
    assert (DOCS / "README.md").is_file()


def test_no_citation_of_the_external_spec():
    hits = []
    for path in _python_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if OLD_CITATION.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "cite docs/<name>.md instead of the external spec:\n" + "\n".join(hits)


def test_cited_docs_exist():
    problems, cited = [], 0
    for path in _python_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for m in DOC_CITATION.finditer(line):
                cited += 1
                _check_target(m.group(1), m.group(2), f"{path.relative_to(ROOT)}:{number}", problems)
    assert cited > 0
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_links_between_docs_resolve(page):
    problems = []
    for number, line in enumerate((DOCS / page).read_text(encoding="utf-8").splitlines(), start=1):
        for m in MD_LINK.finditer(line):
            _check_target(m.group(1), m.group(2), f"docs/{page}:{number}", problems)
        for m in re.finditer(r"\]\(#([\w\-]+)\)", line):
            _check_target(page, m.group(1), f"docs/{page}:{number}", problems)
    assert not problems, "\n".join(problems)


def test_index_lists_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and f"]({p.name})" not in index]
    assert not missing, f"docs/README.md does not link {missing}"
