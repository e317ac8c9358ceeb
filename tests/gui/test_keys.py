"""The key tables: one action per key, every action a method of its window, the texts generated from them,
and the documentation's controls table in step with the SmartSelector's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ROOT

from labeler.gui.canvas import GuideCanvas
from labeler.gui.keys import GUIDE_KEYS, REVIEW_KEYS, SELECTOR_KEYS, Control, KeyTable
from labeler.gui.review_window import ReviewWindow
from labeler.gui.selector import SmartSelector

# The controls lines under the image, as the windows showed them before the tables: always on screen.
SELECTOR_LINE = (
    "drag: box · click: + point · right-click: − point · B: brush (wheel, [ ]: size) · "
    "1–9, N: object ID · D/middle: delete · U/ctrl+z: undo · shift+U/ctrl+y: redo · R: clear · "
    "P: preview · +/-/0: zoom in/out/all · shift+arrows: pan · Enter/Q: accept · Esc: skip · H: help"
)
REVIEW_LINE = ("Enter/A: accept · F: fix · X: exclude · ←/→: previous/next · T: also a reference · "
               "+/-/0: zoom · Q: end review · H: help")


def test_the_controls_lines_are_generated_unchanged():
    assert SELECTOR_KEYS.controls_line() == SELECTOR_LINE
    assert REVIEW_KEYS.controls_line() == REVIEW_LINE


@pytest.mark.parametrize("table, windows", [
    (SELECTOR_KEYS, (SmartSelector,)), (GUIDE_KEYS, (GuideCanvas,)), (REVIEW_KEYS, (ReviewWindow, GuideCanvas)),
])
def test_every_action_is_a_method_of_its_window(table, windows):
    for c in table.controls:
        assert bool(c.action) == bool(c.keys), c
        if c.action:
            assert any(callable(getattr(w, c.action, None)) for w in windows), c.action


def test_keys_find_their_action_per_mode():
    assert SELECTOR_KEYS.action("ctrl+z") == SELECTOR_KEYS.action("u") == "undo"
    assert SELECTOR_KEYS.action("7") == "select_id" and SELECTOR_KEYS.action("x") is None
    assert REVIEW_KEYS.action("enter") == "accept_target" and REVIEW_KEYS.action("enter", "fix") == "save_fix"
    assert GUIDE_KEYS.action("q") is None and GUIDE_KEYS.action("b") == "toggle_brush"  # Q ends no fix
    with pytest.raises(ValueError, match="bound twice"):
        KeyTable("two", [Control("A", "one", "one", ("a",)), Control("A", "two", "two", ("a",))])


def test_the_help_lists_every_control_in_order():
    lines = SELECTOR_KEYS.help_text().splitlines()
    assert lines[:3] == ["SmartSelector controls", "", "Left-drag            box around the object"]
    assert len(lines) == 2 + len(SELECTOR_KEYS.controls)
    assert "  Enter              save the correction" in REVIEW_KEYS.help_text()
    table = SELECTOR_KEYS.markdown().splitlines()
    assert table[:2] == ["| keys | action |", "| --- | --- |"]
    assert "| B, then wheel or [ ] | brush size |" in table and len(table) == 2 + len(SELECTOR_KEYS.controls)


def _names(text: str) -> list[str]:
    """Key names in a label or a docs cell: "U or ctrl+z" -> U, ctrl+z; "`+` or `=` / `-`" -> +, =, -."""
    text = text.replace("`", "").replace("–", "-")
    return [w for w in re.split(r"\s+or\s+|\s+/\s+|,\s+|;\s+|\s+", text) if w]


def _table(page: Path, header: str) -> list[str]:
    """The lines of the first Markdown table on `page` whose header is `header` (indented or not)."""
    lines = [line.strip() for line in page.read_text().splitlines()]
    start = lines.index(header)
    end = next((j for j in range(start, len(lines)) if not lines[j].startswith("|")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("page, keys", [("guiding.md", SELECTOR_KEYS), ("review.md", REVIEW_KEYS)])
def test_the_docs_controls_tables_are_the_windows_own(page, keys):
    """docs/guiding.md and docs/review.md show each window's key table as `KeyTable.markdown()` makes it."""
    assert "\n".join(_table(ROOT / "docs" / page, "| keys | action |")) == keys.markdown(), \
        f"docs/{page}: paste the window's KeyTable.markdown()"
