"""The key tables: one action per key, every action a method of its window, the texts generated from them,
and the documentation's controls table in step with the SmartSelector's."""

from __future__ import annotations

import re

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


def _controls_table() -> tuple[str, list[str]]:
    """The docs' controls table (header `| control |` or `| keys |`): where, and its lines."""
    for page in (ROOT / "docs" / "guiding.md", ROOT / "README.md"):
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"\|\s*(control|keys?)\s*\|", line, re.I):
                end = next((j for j in range(i, len(lines)) if not lines[j].startswith("|")), len(lines))
                return page.name, lines[i:end]
    pytest.fail("no controls table (a header `| control | action |` or `| keys | action |`) in the docs")


def test_the_docs_controls_table_names_every_key():
    """Every key of the SmartSelector's table is in the docs' controls table; a table in the generated form
    (`| keys | action |`, from `SELECTOR_KEYS.markdown()`) must be the generated one."""
    page, table = _controls_table()
    if table[0].replace(" ", "") == "|keys|action|":
        assert "\n".join(table) == SELECTOR_KEYS.markdown(), f"{page}: paste SELECTOR_KEYS.markdown()"
    documented = {name for line in table[2:] for cell in line.strip("|").split("|") for name in _names(cell)}
    missing = [name for c in SELECTOR_KEYS.controls if c.keys for name in _names(c.label) if name not in documented]
    assert not missing, f"{page}'s controls table doesn't name {missing}"
