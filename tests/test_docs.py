"""The docs say what the code does: each claim that can be read off the code is checked.

- every module under heartbeat/ has its row in docs/layout.md, and every module that
  page names exists.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "heartbeat"
DOCS = ROOT / "docs"
LAYOUT = DOCS / "layout.md"


def _modules_on_disk() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }


def _modules_in_layout() -> set[str]:
    return set(re.findall(r"`(heartbeat/[\w/]+\.py)`", LAYOUT.read_text()))


def test_every_module_is_in_the_layout_page() -> None:
    missing = sorted(_modules_on_disk() - _modules_in_layout())
    assert not missing, (
        "docs/layout.md does not name these modules; add a row `| `MODULE` | what it owns |` "
        "to the table of its package: " + ", ".join(missing)
    )


def test_every_module_the_layout_page_names_exists() -> None:
    gone = sorted(_modules_in_layout() - _modules_on_disk())
    assert not gone, (
        "docs/layout.md names modules that do not exist under heartbeat/; remove their rows "
        "(or correct the path): " + ", ".join(gone)
    )
