"""The documentation: every relative link resolves, and nothing cites documents that are not here.

Pure file checks (no broker). The site itself is built by `make docs` (`mkdocs build --strict`,
which also fails on a page missing from the nav or a broken anchor); `make test` runs it first.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

from gen_reference import GENERATED  # noqa: E402  (the pages written at build time, not in git)

LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
"""An inline Markdown link's target (images too: `![...](...)` is matched from its `[`)."""
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")
ABSENT = tuple(f"{name}.md" for name in ("ARCHITECTURE", "REFERENCE", "STYLE"))
"""Documents that are not in the repository: nothing may send a reader to them (spelled out only
here, built so that this file does not cite them itself)."""


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def links(path: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", path.read_text()))  # links in code are examples, not links
    return LINK.findall(text) + re.findall(r"!\[[^\]]*\]\(\s*([^)\s]+)", text)


def relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith(("#", "/"))


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_of_the_repository(path):
    generated = {ROOT / page for page in GENERATED}
    broken = []
    for target in links(path):
        if not relative(target):
            continue
        file = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if not file:
            continue
        resolved = (path.parent / file).resolve()
        if resolved.is_dir():
            resolved = resolved / "index.md"
        if not (resolved.exists() or resolved in generated):
            broken.append(target)
        elif ROOT not in resolved.parents:
            broken.append(f"{target} (outside the repository)")
    assert not broken, f"{path.relative_to(ROOT)}: links to nothing: {broken}"


def test_the_link_pattern_finds_links():
    sample = "[a](x.md) ![img](i.png) [b](https://e.org) [c](#top) `[d](in-code.md)` [e](y.md#part)"
    found = LINK.findall(CODE.sub("", sample))
    assert "x.md" in found and "y.md#part" in found and "in-code.md" not in found


def repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [ROOT / name for name in listed if name and (ROOT / name).is_file()]


def test_nothing_refers_to_documents_that_are_not_in_the_repository():
    """The documents named in ABSENT are not part of this repository: code, docs and data files
    must explain themselves or point at a page under docs/."""
    places = []
    for file in repository_files():
        try:
            text = file.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary files
        for number, line in enumerate(text.splitlines(), 1):
            if any(name in line for name in ABSENT):
                places.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not places, f"{len(places)} places cite {', '.join(ABSENT)}:\n" + "\n".join(places)
