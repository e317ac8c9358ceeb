"""examples/notebook.ipynb, unmodified, in a real kernel (nbclient), with the person played over the widget's comm.

Between the cells, the test is ipympl's front end: it sends the kernel the comm messages ipympl's
`MPLCanvasModel` sends (ipympl's src/mpl_widget.ts: `send_initialization_message`, `mouse_event`,
`key_event`, and the `draw` and `refresh` answers of `handle_draw` and `handle_resize`), as
`comm_msg` on the shell channel, where a browser's arrive; the kernel handles them while it is idle, as
it does a browser's. The same gestures go through the Agg driver (tests/gui/agg_driver.py) on the same
references, and the PromptSet that arrives in the notebook must equal the Agg one.

Needs ipympl (the `notebook` extra) and nbclient (the `test` extra): without them the file skips, saying
so, except in CI (CI set), where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

try:
    import ipympl  # noqa: F401
    import nbclient
    import nbformat
except ImportError as e:  # optional extras: CI installs them (.ci/run), so there a missing one is a failure
    if os.environ.get("CI"):
        raise
    pytest.skip(f'{e.name} is not installed: pip install -e ".[test,notebook]"', allow_module_level=True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from agg_driver import Driver, ScriptedHost  # noqa: E402
from helpers import ROOT, check_outputs  # noqa: E402
from standin_backend import StandInBackend  # noqa: E402

from labeler.errors import UsageError  # noqa: E402
from labeler.gui.hosts.desktop import FIGURE_SIZE  # noqa: E402
from labeler.gui.hosts.notebook import NOTEBOOK_DPI, require_ipympl  # noqa: E402
from labeler.gui.notebook import guide_in_notebook  # noqa: E402
from labeler.models.backend import ModelSettings  # noqa: E402
from labeler.outputs.folder import LOCK_NAME  # noqa: E402
from labeler.prompts.prompt_set import PromptSet, prompts_to_dict  # noqa: E402
from labeler.utils.images import list_images  # noqa: E402

NOTEBOOK = ROOT / "examples" / "notebook.ipynb"
WIDTH, HEIGHT = (round(side * NOTEBOOK_DPI) for side in FIGURE_SIZE)  # the widget's size in CSS pixels
# What the person does on each reference, in image pixels: ("drag", points, button), ("click", point, button)
# (1 left, 3 right), ("key", DOM KeyboardEvent.key). "p" toggles the live preview: had matplotlib's default
# keys stayed on, it would also start pan mode and the box after it would pan the image instead.
GESTURES = {
    "ref1.jpg": [("drag", [(105, 67), (150, 110), (203, 165)], 1), ("key", "2"),
                 ("drag", [(205, 82), (280, 157)], 1), ("key", "Enter")],
    "ref2.jpg": [("key", "p"), ("drag", [(40, 30), (120, 100), (160, 140)], 1), ("key", "2"),
                 ("click", (242, 120), 1), ("click", (60, 200), 3), ("key", "Enter")],
}
JS_BUTTON = {1: 0, 2: 1, 3: 2}  # matplotlib's button -> the DOM's MouseEvent.button
JS_BUTTONS = {1: 1, 2: 4, 3: 2}  # -> the DOM's MouseEvent.buttons bit while it is held
KERNEL_TIMEOUT = 60


# ----- the person on Agg: the expected prompts, and where each gesture lands in the widget ----------------
def play_on_agg(references: list[Path], prompts_path: Path) -> tuple[PromptSet, dict[str, list]]:
    """Run the gestures through the Agg driver (`run_selector` on a `ScriptedHost`); returns the prompts and,
    per reference, the widget's events: CSS pixels from its top left, whole pixels as a browser's are."""
    from labeler.gui.selector import run_selector

    events: dict[str, list] = {}

    def person(window):
        d = Driver(window)
        fig = window.fig

        def at(point):
            """The whole CSS pixel of the widget over `point`, and the image point under that pixel."""
            fx, fy = fig.transFigure.inverted().transform(window.ax.transData.transform(point))
            css = (round(fx * WIDTH), round((1 - fy) * HEIGHT))
            back = window.ax.transData.inverted().transform(fig.transFigure.transform(
                (css[0] / WIDTH, 1 - css[1] / HEIGHT)))
            return css, tuple(back)

        played = events.setdefault(window.image_path.name, [])
        for kind, where, *rest in GESTURES[window.image_path.name]:
            if kind == "key":
                d.key(where.lower() if where == "Enter" else where)
                played.append(("key", where))
                continue
            points = where if kind == "drag" else [where]
            css, image = zip(*(at(p) for p in points))
            d.mouse("motion_notify_event", *image[0])
            if kind == "drag":
                d.drag(list(image), button=rest[0])
            else:
                d.click(*image[0], button=rest[0])
            played.append((kind, list(css), rest[0]))

    prompts = run_selector(references, StandInBackend(ModelSettings("standin")), {1: "disc", 2: "square"},
                           prompts_path, host=ScriptedHost(person))
    return prompts, events


# ----- ipympl's front end, as the kernel sees it ----------------------------------------------------------
class FrontEnd:
    """One ipympl canvas's front end: the messages its model sends, and its answers to the kernel's."""

    def __init__(self, kc, comm_id: str, ratio: float = 1):
        self.kc, self.comm_id = kc, comm_id
        self.ratio = ratio  # window.devicePixelRatio (2 on a HiDPI screen)
        self.waiting_for_image = False
        self.frames = 0  # PNG frames received
        self.redraws = 0  # of them, those that answered the kernel's request to draw (whole redraws)
        self.sent: list[dict] = []

    def send(self, type_: str, **fields) -> None:
        # ipywidgets' WidgetModel.send(content): {method: "custom", content} over the widget's comm.
        content = {**fields, "type": type_}
        self.sent.append(content)
        self.kc.shell_channel.send(self.kc.session.msg(
            "comm_msg", {"comm_id": self.comm_id, "data": {"method": "custom", "content": content}}))

    def connect(self) -> None:
        # send_initialization_message (the ratio messages only where it is not 1)
        if self.ratio != 1:
            self.send("set_dpi_ratio", dpi_ratio=self.ratio)
            self.send("set_device_pixel_ratio", device_pixel_ratio=self.ratio)
        self.send("refresh")
        self.send("send_image_mode")
        self.send("initialized")

    def receive(self, msg: dict) -> None:
        if msg["msg_type"] != "comm_msg" or msg["content"].get("comm_id") != self.comm_id:
            return
        data = msg["content"]["data"]
        if data.get("method") != "custom":
            return  # trait updates (the cursor, the image mode, ...)
        message = json.loads(data["content"]["data"])
        if message["type"] == "draw" and not self.waiting_for_image:  # handle_draw -> send_draw_message
            self.waiting_for_image = True
            self.send("draw")
        elif message["type"] == "binary":  # handle_binary
            self.redraws += self.waiting_for_image
            self.waiting_for_image = False
            self.frames += 1
        elif message["type"] == "resize":  # handle_resize
            self.send("refresh")

    def mouse(self, name: str, xy, button: int = 1, held: int = 0) -> None:
        """mouse_event: x, y in CSS pixels from the canvas's top left, times the device pixel ratio."""
        js_type = {"button_press": "mousedown", "button_release": "mouseup", "motion_notify": "mousemove"}[name]
        x, y = xy
        gui = {"isTrusted": True, "type": js_type, "button": JS_BUTTON[button], "buttons": held, "clientX": x + 8,
               "clientY": y + 120, "offsetX": x, "offsetY": y, "ctrlKey": False, "shiftKey": False, "altKey": False,
               "metaKey": False, "detail": 1 if js_type != "mousemove" else 0}
        # A mouse move's `button` is 0 whatever is held; `step` is undefined outside a wheel: JSON leaves it out.
        self.send(name, x=x * self.ratio, y=y * self.ratio, button=JS_BUTTON[button] if name != "motion_notify" else 0, buttons=held,
                  modifiers=[], guiEvent=gui)

    def key(self, key: str) -> None:
        """key_event: "k" + KeyboardEvent.key (no modifier held), a key_press then its key_release."""
        for name, js_type in (("key_press", "keydown"), ("key_release", "keyup")):
            gui = {"isTrusted": True, "type": js_type, "key": key, "code": f"Key{key.upper()}" if len(key) == 1
                   else key, "repeat": False, "ctrlKey": False, "shiftKey": False, "altKey": False, "metaKey": False}
            self.send(name, key="k" + key, guiEvent=gui)

    def play(self, gestures: list) -> None:
        for gesture in gestures:
            if gesture[0] == "key":
                self.key(gesture[1])
                continue
            kind, points, button = gesture
            bit = JS_BUTTONS[button]
            self.mouse("motion_notify", points[0])  # the pointer gets there first
            self.mouse("button_press", points[0], button, held=bit)
            for p in points[1:]:
                self.mouse("motion_notify", p, held=bit)
            self.mouse("button_release", points[-1], button, held=0)


class Kernel:
    """The notebook's kernel: its cells through nbclient, and code of the test's own between them."""

    def __init__(self, client: nbclient.NotebookClient, nb):
        self.client, self.nb = client, nb
        self.kc = client.kc
        self.front: FrontEnd | None = None

    async def cell(self, cell_id: str):
        index, cell = next((i, c) for i, c in enumerate(self.nb.cells) if c.get("id") == cell_id)
        await self.client.async_execute_cell(cell, index)
        return cell

    async def run(self, code: str) -> str:
        """Run `code` in the kernel (not a notebook cell); its stdout. The front end answers meanwhile."""
        msg_id = self.kc.execute(code, store_history=False)
        out, error = [], None
        while True:
            msg = await self.kc.get_iopub_msg(timeout=KERNEL_TIMEOUT)
            if self.front is not None:
                self.front.receive(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                error = "\n".join(msg["content"]["traceback"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        while (await self.kc.get_shell_msg(timeout=KERNEL_TIMEOUT))["parent_header"].get("msg_id") != msg_id:
            pass
        assert error is None, error
        return "".join(out)

    async def until(self, condition: str, timeout: float = 30) -> None:
        """Wait (the kernel idle between polls, handling the front end's messages) until `condition` holds."""
        deadline = time.monotonic() + timeout
        while (await self.run(f"print(bool({condition}))")).strip() != "True":
            assert time.monotonic() < deadline, f"timed out waiting for {condition}"
            await asyncio.sleep(0.1)

    async def settle(self, timeout: float = 30) -> None:
        """Wait until the widget is quiet: no redraw pending, no frame for a moment (the person looks)."""
        deadline = time.monotonic() + timeout
        while True:
            frames = self.front.frames
            await self.run("pass")
            await asyncio.sleep(0.2)
            await self.run("pass")
            if not self.front.waiting_for_image and self.front.frames == frames:
                return
            assert time.monotonic() < deadline, "the widget does not settle"

    async def redrawn(self, since: int, timeout: float = 30) -> None:
        """Wait until the kernel has asked the front end to draw, and the whole figure's frame has come,
        more than `since` times."""
        deadline = time.monotonic() + timeout
        while self.front.redraws <= since:
            assert time.monotonic() < deadline, "the figure was not redrawn in the widget"
            await self.run("pass")
            await asyncio.sleep(0.05)


def widget_id(cell) -> str:
    views = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for o in cell.outputs
             if o.get("output_type") == "display_data" and "application/vnd.jupyter.widget-view+json" in o["data"]]
    assert len(views) == 1, cell.outputs
    return views[0]


def rounded(value):
    """JSON data with floats to 6 places (the notebook's float path and the Agg driver's differ in the last bits)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory):
    """examples/notebook.ipynb run once, cell by cell, in the repository's layout (copies: examples/ beside
    assets/demo), with the person playing the widgets between the cells; what the tests look at."""
    root = tmp_path_factory.mktemp("notebook")
    (root / "examples").mkdir()
    shutil.copy(NOTEBOOK, root / "examples" / NOTEBOOK.name)
    shutil.copytree(ROOT / "assets" / "demo", root / "assets" / "demo")
    refs = list_images(root / "assets" / "demo" / "refs")
    expected, events = play_on_agg(refs, root / "agg" / "prompts.json")
    out = root / "examples" / "output"
    nb = nbformat.read(root / "examples" / NOTEBOOK.name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=KERNEL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(root / "examples")}})
    got: dict = {"root": root, "out": out, "expected": expected,
                 "stored_outputs": [c.id for c in nb.cells if c.cell_type == "code" and c.outputs]}

    async def person():
        async with client.async_setup_kernel():
            k = Kernel(client, nb)
            await k.cell("setup")
            start = time.monotonic()
            guide = await k.cell("guide")
            got["guide_cell_s"] = time.monotonic() - start
            # Before the person does anything: the cell has returned, the widget is shown.
            got["done_before"] = (await k.run("print(session.done(), session.future.done())")).split()
            got["early_result"] = await k.run(
                "try:\n    session.result()\nexcept labeler.UsageError as e:\n    print('UsageError:', e)")
            k.front = FrontEnd(k.kc, widget_id(guide), ratio=2)  # a HiDPI screen: the figure renders at 2x
            k.front.connect()
            redraws = 0
            for ref in refs:
                await k.until(f"session.sequence.window.image_path.name == {ref.name!r}")
                await k.redrawn(since=redraws)  # the reference is drawn in the widget: the person sees it
                await k.settle()
                redraws = k.front.redraws
                k.front.play(events[ref.name])
            await k.until("session.done()")
            got["kernel"] = json.loads(await k.run(
                "import json, matplotlib\nfrom labeler.prompts.prompt_set import prompts_to_dict\n"
                "c = session.host.canvas\nprint(json.dumps({'keymap.pan': matplotlib.rcParams['keymap.pan'], "
                "'toolbar mode': str(c.toolbar.mode), 'capture_scroll': c.capture_scroll, "
                "'backend': matplotlib.get_backend(), 'device_pixel_ratio': c.device_pixel_ratio}))"))
            result = await k.cell("result")
            got["printed"] = "".join(o.get("text", "") for o in result.outputs)
            got["arrived"] = json.loads(await k.run(f"print(json.dumps(prompts_to_dict(prompts, {str(out)!r})))"))
            got["saved"] = prompts_to_dict(PromptSet.load(out / "prompts.json"), out)
            label = await k.cell("label")
            got["summary"] = "".join(o.get("text", "") for o in label.outputs if o.get("name") == "stdout")
            got["states_before"] = review_states(out)

            review = await k.cell("review")
            got["lock_held_open"] = (out / LOCK_NAME).exists()
            k.front = FrontEnd(k.kc, widget_id(review))
            k.front.connect()
            await k.redrawn(since=0)
            await k.settle()
            got["order"] = json.loads(await k.run("print(json.dumps(review.sequence.window.names))"))
            redraws = k.front.redraws
            k.front.play([("key", "a")])  # accept the worst target
            await k.until("review.sequence.window.index == 1")
            await k.redrawn(since=redraws)
            await k.settle()
            k.front.play([("key", "t"), ("key", "a"), ("key", "q")])  # teach and accept the next; end the review
            await k.until("review.done()")
            got["lock_held_at_end"] = (out / LOCK_NAME).exists()
            got["states_after"] = review_states(out)
            await k.cell("taught")
            got["taught"] = json.loads(await k.run("print(json.dumps(prompts_to_dict(taught, 'output')))"))

    with pytest.MonkeyPatch.context() as mp:  # the kernel imports this checkout's labeler
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        start = time.monotonic()
        asyncio.run(person())
    print(f"the notebook, played: {time.monotonic() - start:.1f} s", file=sys.stderr)
    return got


def review_states(out: Path) -> dict[str, tuple[str, bool]]:
    """target -> (review state, marked to teach), as the folder records them."""
    from labeler.review.session import Review

    return {r.name: (r.review_state, bool(r.review and r.review.get("teach"))) for r in Review(out).records()}


def test_the_guide_cell_returns_at_once_and_the_result_waits_for_the_person(notebook_run):
    assert notebook_run["stored_outputs"] == []  # the example is stored clean
    assert notebook_run["done_before"] == ["False", "False"]
    assert notebook_run["early_result"].startswith("UsageError: the references are not all done yet: draw the "
                                                   "guides on each one and press Enter, then run this cell again")


def test_the_prompts_that_arrive_are_the_agg_drivers_for_the_same_events(notebook_run):
    out = notebook_run["out"]
    want = rounded(prompts_to_dict(notebook_run["expected"], out))
    assert [[o["id"] for o in r["objects"]] for r in want["references"]] == [[1, 2], [1, 2]]
    assert "box" in want["references"][1]["objects"][0] and "points" in want["references"][1]["objects"][1]
    assert rounded(notebook_run["arrived"]) == want
    assert rounded(notebook_run["saved"]) == want  # output/prompts.json
    assert notebook_run["printed"] == "2 references guided, object IDs [1, 2]\n"


def test_the_widget_leaves_the_kernels_matplotlib_as_it_was(notebook_run):
    kernel = notebook_run["kernel"]
    # No backend switch; matplotlib's default keys off on the widget alone (P toggled the preview: no pan mode).
    assert "ipympl" not in kernel["backend"]
    assert kernel["keymap.pan"] == ["p"] and kernel["toolbar mode"] == ""
    assert kernel["capture_scroll"] is True
    assert kernel["device_pixel_ratio"] == 2  # the guide's widget played a HiDPI screen: events came at 2x


def test_the_batch_cell_writes_the_outputs(notebook_run):
    assert notebook_run["summary"].startswith("6 targets: 6 labeled")
    check_outputs(notebook_run["out"], list_images(notebook_run["root"] / "assets" / "demo" / "targets"), [1, 2])


def test_the_review_cell_accepts_and_teaches_targets(notebook_run):
    before, after = notebook_run["states_before"], notebook_run["states_after"]
    first, second = notebook_run["order"][:2]
    assert set(before.values()) == {("unreviewed", False)} and len(before) == 6
    assert after[first] == ("accepted", False) and after[second] == ("accepted", True)
    assert {after[name] for name in after if name not in (first, second)} == {("unreviewed", False)}
    assert notebook_run["lock_held_open"] and not notebook_run["lock_held_at_end"]  # held until the window ended
    # The taught target came back as the third reference, and relabeled the unreviewed targets.
    assert [Path(r["image"]).name for r in notebook_run["taught"]["references"]] == ["ref1.jpg", "ref2.jpg", second]
    assert len(PromptSet.load(notebook_run["out"] / "prompts.json").references) == 3
    check_outputs(notebook_run["out"], list_images(notebook_run["root"] / "assets" / "demo" / "targets"), [1, 2])


def test_a_missing_ipympl_is_one_message_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipympl", None)  # import ipympl raises ImportError
    monkeypatch.setitem(sys.modules, "ipympl.backend_nbagg", None)
    with pytest.raises(UsageError, match=r'needs ipympl \(ipympl can.t be imported\): pip install -e "\.\[notebook\]"'):
        guide_in_notebook(ROOT / "assets" / "demo" / "refs", checkpoint="none")


def test_an_ipympl_that_drops_keys_is_refused(monkeypatch):
    monkeypatch.setattr(ipympl, "__version__", "0.9.5")
    monkeypatch.setattr(matplotlib, "__version_info__", (3, 10, 0))
    with pytest.raises(UsageError, match=r"ipympl 0\.9\.5 delivers no key presses .*0\.9\.6"):
        require_ipympl()
    monkeypatch.setattr(matplotlib, "__version_info__", (3, 9, 4))
    require_ipympl()  # matplotlib before 3.10 reads the older ipympl's keys


def test_outside_a_kernel_it_says_where_it_runs():
    with pytest.raises(UsageError, match="run in a notebook cell"):
        guide_in_notebook(ROOT / "assets" / "demo" / "refs", checkpoint="none")


def test_the_headless_path_imports_no_notebook_package():
    import subprocess

    code = ("import sys, labeler\nlabeler.guide_in_notebook, labeler.review_in_notebook\n"
            "import labeler.batch.pipeline, labeler.cli\n"
            "print(sorted(m for m in ('ipympl', 'ipywidgets', 'IPython', 'nbclient') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
