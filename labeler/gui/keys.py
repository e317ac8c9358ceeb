"""The windows' controls, one table per window: each key's action and help text, in the order the help lists them.

A `Control` binds matplotlib's key names (`KeyEvent.key`) to an action, the name of a method of the window
(or of its canvas) that takes the key event; a mouse control has no keys and only documents what the
mouse handlers do. The help overlay (`help_text`), the controls line under the image (`controls_line`)
and the documentation's table (`markdown`) are all generated from the table.

Usage:
    SELECTOR_KEYS.press(event, selector)          # runs the action bound to event.key, if any
    print(SELECTOR_KEYS.markdown())               # | keys | action | ...
"""

from __future__ import annotations

from dataclasses import dataclass

DIGITS = tuple("123456789")
PAN_KEYS = {"shift+left": (-0.25, 0.0), "shift+right": (0.25, 0.0), "shift+up": (0.0, -0.25),
            "shift+down": (0.0, 0.25)}  # a quarter of the view
HELP_COLUMN = 20  # the help's key column, characters


@dataclass(frozen=True)
class Control:
    """One line of a window's help: keys (or a mouse action) and what they do.

    label: the keys as the help writes them; indented, a control within the one above (the brush's,
    a fix's). action: the method the keys call with the key event ("" for a mouse control). keys:
    matplotlib's key names. brief: its entry in the controls line ("": none, another entry sums it up).
    mode: the window mode the keys act in ("": the window's usual one).
    """

    label: str
    help: str
    action: str = ""
    keys: tuple[str, ...] = ()
    brief: str = ""
    mode: str = ""


class KeyTable:
    """A window's controls, in help order; a key has at most one action per mode."""

    def __init__(self, title: str, controls: list[Control]):
        self.title = title
        self.controls = list(controls)
        self._actions: dict[tuple[str, str], str] = {}
        for c in self.controls:
            for key in c.keys:
                if (c.mode, key) in self._actions:
                    raise ValueError(f"{title}: key {key!r} bound twice")
                self._actions[c.mode, key] = c.action

    def action(self, key: str, mode: str = "") -> str | None:
        """The name of the action bound to `key` in `mode`, None if none."""
        return self._actions.get((mode, key))

    def press(self, event, *targets, mode: str = "") -> bool:
        """Run the action bound to `event.key`: the method of that name of the first of `targets` that has it."""
        action = self.action(event.key or "", mode)
        if action is None:
            return False
        method = next(getattr(t, action) for t in targets if hasattr(t, action))
        method(event)
        return True

    def without(self, *actions: str) -> list[Control]:
        """The controls but those with these actions."""
        return [c for c in self.controls if c.action not in actions]

    def help_text(self) -> str:
        """The help overlay: the title, then a line per control."""
        return "\n".join([self.title, "", *(f"{c.label:{HELP_COLUMN}} {c.help}" for c in self.controls)])

    def controls_line(self) -> str:
        """The one line of controls shown under the image."""
        return " · ".join(c.brief for c in self.controls if c.brief)

    def markdown(self) -> str:
        """The table in Markdown (keys | action), for the documentation."""
        lines, parent = ["| keys | action |", "| --- | --- |"], ""
        for c in self.controls:
            label = c.label.strip()
            if c.label.startswith(" "):
                label = f"{parent}, then {label}"
            else:
                parent = label
            lines.append(f"| {label} | {c.help} |")
        return "\n".join(lines)


SELECTOR_KEYS = KeyTable("SmartSelector controls", [
    Control("Left-drag", "box around the object", brief="drag: box"),
    Control("Left click", "positive point", brief="click: + point"),
    Control("Right click", "negative point", brief="right-click: − point"),
    Control("B", "brush on/off", "toggle_brush", ("b",), "B: brush (wheel, [ ]: size)"),
    Control("  left-drag", "paint"),
    Control("  right-drag", "erase"),
    Control("  wheel or [ ]", "brush size", "change_brush_size", ("[", "]")),
    Control("1-9", "select object ID", "select_id", DIGITS, "1–9, N: object ID"),
    Control("N", "next unused ID", "next_unused_id", ("n",)),
    Control("click a sidebar slot", "select that ID"),
    Control("D or middle click", "delete the guide nearest the cursor", "delete_at_pointer", ("d",), "D/middle: delete"),
    Control("U or ctrl+z", "undo", "undo", ("u", "ctrl+z"), "U/ctrl+z: undo"),
    Control("shift+U or ctrl+y", "redo", "redo", ("U", "shift+u", "ctrl+y", "ctrl+Y"), "shift+U/ctrl+y: redo"),
    Control("R", "clear the current object", "clear", ("r",), "R: clear"),
    Control("P", "live preview on/off", "toggle_preview", ("p",), "P: preview"),
    Control("+ or =", "zoom in 2x at the cursor", "zoom_in", ("+", "="), "+/-/0: zoom in/out/all"),
    Control("-", "zoom out 2x", "zoom_out", ("-",)),
    Control("0", "whole image", "reset_view", ("0",)),
    Control("shift+arrows", "pan a quarter of the view", "pan", tuple(PAN_KEYS), "shift+arrows: pan"),
    Control("Enter or Q", "accept this reference and go on", "accept", ("enter", "q"), "Enter/Q: accept"),
    Control("Esc", "skip this reference", "skip", ("escape",), "Esc: skip"),
    Control("Closing the window", "accepts it"),
    Control("H", "this help", "toggle_help", ("h",), "H: help"),
])

# A fix in the review window edits with these: the SmartSelector's keys but those ending a reference.
GUIDE_KEYS = KeyTable("guide controls", SELECTOR_KEYS.without("accept", "skip"))

REVIEW_KEYS = KeyTable("Review controls", [
    Control("Enter or A", "accept the target as labeled", "accept_target", ("enter", "a"), "Enter/A: accept"),
    Control("F", "fix it: the SmartSelector's guide controls", "start_fix", ("f",), "F: fix"),
    Control("  Enter", "save the correction", "save_fix", ("enter",), mode="fix"),
    Control("  Esc", "drop it", "drop_fix", ("escape",), mode="fix"),
    Control("X", "exclude it (left out of the exports)", "exclude", ("x",), "X: exclude"),
    Control("Left", "previous target", "previous", ("left",), "←/→: previous/next"),
    Control("Right", "next target", "next", ("right",)),
    Control("T", "also use it as a reference (taught when the review ends)", "toggle_teach", ("t",),
            "T: also a reference"),
    Control("+ or =", "zoom in 2x at the cursor", "zoom_in", ("+", "="), "+/-/0: zoom"),
    Control("-", "zoom out 2x", "zoom_out", ("-",)),
    Control("0", "whole image", "reset_view", ("0",)),
    Control("shift+arrows", "pan a quarter of the view", "pan", tuple(PAN_KEYS)),
    Control("Q or Esc", "end the review (everything is saved)", "end", ("q", "escape"), "Q: end review"),
    Control("Closing the window", "ends it too"),
    Control("H", "this help", "toggle_help", ("h",), "H: help"),
])
