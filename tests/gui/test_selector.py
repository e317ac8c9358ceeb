"""The real SmartSelector on the Agg backend, driven by matplotlib events sent through the figure's canvas."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from agg_driver import Driver, ScriptedHost  # noqa: E402
from helpers import as_backend, save_jpeg, synthetic_image  # noqa: E402
from matplotlib.backend_bases import MouseEvent  # noqa: E402

from labeler.gui.selector import SessionInfo, SmartSelector  # noqa: E402
from labeler.models.sam2.tracker import ReferencePreview, compose_mask  # noqa: E402
from labeler.prompts.guide_state import GuideState  # noqa: E402

W, H = 320, 240


@pytest.fixture
def reference(tmp_path):
    rgb = synthetic_image(100)
    return save_jpeg(rgb, tmp_path / "ref.jpg"), rgb


@pytest.fixture
def selector(predictor, reference):
    path, rgb = reference
    fig = plt.figure(figsize=(10, 6))
    sel = SmartSelector(fig, path, rgb, ReferencePreview(as_backend(predictor), rgb),
                        session=SessionInfo(classes={1: "scratch"}), title="SmartSelector — ref.jpg (1/1)")
    yield sel
    plt.close(fig)


def _disc(cx, cy, r):
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_drawing_every_kind_of_guide_gives_the_expected_prompts(selector, predictor, reference):
    d = Driver(selector)
    d.drag([(40, 30), (120, 100), (200, 180)])          # box for ID 1
    d.click(120, 100)                                   # positive point
    d.click(250, 60, button=3)                          # negative point
    d.key("2")
    d.key("b")                                          # brush on
    assert selector.brush
    d.drag([(60, 200), (100, 200)])                     # paint
    d.drag([(100, 200), (100, 200)], button=3)          # erase one stamp
    d.key("b")
    d.key("3")
    d.click(280, 30)
    d.key("d", at=(282, 32))                            # delete the guide nearest the cursor
    assert selector.state.object(3) is None
    d.key("u")                                          # undo brings it back
    assert selector.state.object(3).points == [pytest.approx((280, 30))]
    d.key("U")                                          # redo deletes it again
    assert selector.state.object(3) is None
    d.key("enter")

    result = selector.result
    assert selector.done and [o.id for o in result.objects] == [1, 2]
    one, two = result.objects
    assert one.box == pytest.approx((40, 30, 200, 180))
    assert one.points == [pytest.approx((120, 100)), pytest.approx((250, 60))] and one.labels == [1, 0]
    r = GuideState(W, H).brush_radius
    assert two.paint is not None and two.erase is not None
    assert two.paint[200, 60] and two.paint[200, 80] and not two.paint[200, 100]
    assert two.erase[200, 100] and not two.erase[200, 60]
    assert np.array_equal(two.erase, _disc(100, 200, r))
    assert (result.width, result.height, result.image) == (W, H, reference[0])


def test_shown_masks_are_what_conditions_the_batch(selector, predictor, reference):
    d = Driver(selector)
    d.drag([(40, 30), (200, 180)])
    d.key("b")
    d.drag([(250, 200), (300, 200)])
    d.drag([(80, 80), (90, 90)], button=3)
    obj = selector.state.guides()[0]
    expected = ReferencePreview(as_backend(predictor), reference[1]).mask(obj)   # the engine's conditioning mask
    np.testing.assert_array_equal(selector.shown_mask(1), expected)
    tinted = (selector._display[..., :3] != reference[1]).any(-1)
    assert tinted[expected].mean() > 0.95 and not tinted[~expected].any()
    d.key("p")                                          # preview off: the brush alone
    brush = compose_mask(np.zeros((H, W), bool), obj)
    np.testing.assert_array_equal(selector.shown_mask(1), brush)
    assert not (selector._display[..., :3] != reference[1]).any(-1)[~brush].any()


def test_keys_switch_ids_and_brush_size_and_clear(selector):
    d = Driver(selector)
    d.key("n")
    assert selector.state.current_id == 1               # nothing drawn yet: ID 1 is unused
    d.click(50, 50)
    d.key("n")
    assert selector.state.current_id == 2
    d.click(60, 60, button=3)
    d.key("r")                                          # clear the current object
    assert selector.state.ids() == [1]
    d.key("b")
    size = selector.state.brush_radius
    d.key("]")
    assert selector.state.brush_radius > size
    d.mouse("scroll_event", 100, 100)                   # no step: smaller
    d.key("[")
    assert selector.state.brush_radius < size + 2
    d.key("h")
    assert selector.help_text.get_visible()


def test_clicking_a_sidebar_slot_selects_its_id(selector):
    d = Driver(selector)
    slot_height = min(0.1, 1.0 / len(selector._slot_ids))
    d.mouse("button_press_event", 0.5, 4.5 * slot_height, button=1, axes=selector.side)  # fifth slot
    assert selector.state.current_id == 5


def test_escape_skips_and_closing_accepts(predictor, reference):
    path, rgb = reference
    for key, accepted in (("escape", False), (None, True)):
        fig = plt.figure()
        sel = SmartSelector(fig, path, rgb, ReferencePreview(as_backend(predictor), rgb))
        d = Driver(sel)
        d.click(100, 100)
        if key:
            d.key(key)
        else:
            plt.close(fig)
            fig.canvas.callbacks.process("close_event", None)
        assert sel.done and (sel.result is not None) == accepted
        if accepted:
            assert sel.result.objects[0].points == [pytest.approx((100, 100))]


def test_run_selector_saves_after_each_reference_and_edit_prefills(predictor, tmp_path):
    """The session: guides per reference, prompts saved after every accepted one, --edit reopens them."""
    from labeler.gui.selector import run_selector
    from labeler.prompts.prompt_set import load_prompts

    refs = [save_jpeg(synthetic_image(300 + i), tmp_path / "refs" / f"r{i}.jpg") for i in range(3)]
    prompts_path = tmp_path / "out" / "prompts.json"
    actions = iter([
        lambda d: (d.drag([(20, 20), (120, 90)]), d.key("enter")),          # r0: a box for ID 1
        lambda d: d.key("escape"),                                          # r1: skipped
        lambda d: (d.key("2"), d.click(200, 150), d.key("enter")),          # r2: a point for ID 2
    ])
    saved_before = []

    def show(sel):
        saved_before.append(load_prompts(prompts_path).references if prompts_path.exists() else [])
        sel.wait_for_preview()
        next(actions)(Driver(sel))

    host = ScriptedHost(show)
    opened = host.windows
    prompts = run_selector(refs, as_backend(predictor), {1: "scratch"}, prompts_path, host=host)
    assert [len(r) for r in saved_before] == [0, 1, 1]         # saved after each accepted reference
    assert [r.image for r in prompts.references] == [refs[0], refs[2]]
    assert prompts.classes == {1: "scratch"}
    assert load_prompts(prompts_path) == prompts
    assert opened[0].fig.texts[0].get_text().startswith("SmartSelector")

    # --edit: the saved guides come back; a new point is added to ID 1 on the first reference.
    opened.clear()
    actions = iter([
        lambda d: (d.click(60, 50), d.key("enter")),
        lambda d: d.key("enter"),
    ])
    edited = run_selector([r.image for r in prompts.references], as_backend(predictor), {}, prompts_path,
                          existing=prompts, host=host)
    assert opened[0].state.object(1).box == pytest.approx((20, 20, 120, 90))
    first = edited.references[0].objects[0]
    assert first.box == pytest.approx((20, 20, 120, 90)) and first.points == [pytest.approx((60, 50))]
    assert edited.references[1] == prompts.references[1]
    assert opened[1].session.guided_on == {1: 1}               # the sidebar counts the other reference


def test_zoom_and_pan_keys_keep_guides_in_image_pixels(selector):
    d = Driver(selector)
    ax = selector.ax
    box = ax.bbox.frozen()                             # the axes keep their box at every zoom

    def screen(x, y, xlim, ylim):
        """Where image point (x, y) is on screen for the view xlim x ylim, from the axes box alone."""
        sx = box.x0 + (x - xlim[0]) / (xlim[1] - xlim[0]) * box.width
        sy = box.y1 - (y - ylim[1]) / (ylim[0] - ylim[1]) * box.height
        return sx, sy

    def raw(name, xy, button=None):
        selector.fig.canvas.callbacks.process(name, MouseEvent(name, selector.fig.canvas, *xy, button=button))

    d.key("+", at=(100, 80))                           # 2x, centred on the pointer
    xlim, ylim = (20, 180), (140, 20)
    assert ax.get_xlim() == pytest.approx(xlim) and ax.get_ylim() == pytest.approx(ylim)
    assert ax.bbox.bounds == pytest.approx(box.bounds)
    assert "zoom 2x" in selector.status_text.get_text()
    raw("button_press_event", screen(60, 40, xlim, ylim), 1)   # a box drawn while zoomed, in screen pixels
    raw("motion_notify_event", screen(90, 70, xlim, ylim))
    raw("button_release_event", screen(120, 100, xlim, ylim), 1)
    assert selector.state.object(1).box == pytest.approx((60, 40, 120, 100), abs=0.01)
    d.key("b")
    raw("button_press_event", screen(150, 130, xlim, ylim), 1)  # one brush stamp
    raw("button_release_event", screen(150, 130, xlim, ylim), 1)
    assert np.array_equal(selector.state.object(1).paint, _disc(150, 130, selector.state.brush_radius))

    d.key("shift+right")                               # a quarter of the view
    assert ax.get_xlim() == pytest.approx((60, 220)) and ax.get_ylim() == pytest.approx(ylim)
    d.key("shift+down")
    assert ax.get_ylim() == pytest.approx((170, 50))
    for _ in range(5):                                 # never past the image's edge
        d.key("shift+right")
        d.key("shift+up")
    assert ax.get_xlim() == pytest.approx((159.5, 319.5)) and ax.get_ylim() == pytest.approx((119.5, -0.5))
    d.key("-")                                         # back out: the whole image
    assert ax.get_xlim() == pytest.approx((-0.5, W - 0.5)) and ax.get_ylim() == pytest.approx((H - 0.5, -0.5))
    assert "zoom" not in selector.status_text.get_text()

    d.mouse("motion_notify_event", 0.5, 0.5, axes=selector.side)  # the pointer off the image
    d.key("=")                                         # centred on the view's centre
    assert ax.get_xlim() == pytest.approx((79.5, 239.5))
    for _ in range(10):                                # the closest zoom still shows MIN_VIEW pixels
        d.key("+")
    assert ax.get_ylim()[0] - ax.get_ylim()[1] == pytest.approx(8)
    d.key("0")
    assert ax.get_xlim() == pytest.approx((-0.5, W - 0.5))


def test_each_action_repaints_only_what_changed_and_the_window_stays_right(selector):
    """Partial repaints (what a remote display receives) leave the figure as a full draw would draw it."""
    d = Driver(selector)
    canvas = selector.fig.canvas
    blitted = []
    canvas.blit = lambda bbox=None: blitted.append(bbox.width * bbox.height)
    ax_area = 0.79 * canvas.figure.bbox.width * 0.88 * canvas.figure.bbox.height

    def act(action, most: float):
        blitted.clear()
        action()
        assert sum(blitted) <= most, f"{sum(blitted)} pixels blitted, at most {most} expected"
        partial = np.asarray(canvas.buffer_rgba()).astype(int)
        canvas.draw()                                  # the reference: everything drawn again
        difference = np.abs(partial - np.asarray(canvas.buffer_rgba())).max(axis=-1)
        assert difference.max() <= 2, f"{(difference > 2).sum()} pixels differ from a full draw"

    act(lambda: d.mouse("motion_notify_event", 50, 50), 0)       # hovering changes nothing
    act(lambda: d.drag([(40, 30), (120, 100), (200, 180)]), ax_area)
    act(lambda: d.click(120, 100), ax_area)
    act(lambda: d.key("2"), 0.1 * ax_area)                        # the guides' widths, two sidebar slots
    act(lambda: d.key("b", at=(60, 200)), 0.03 * ax_area)            # the brush circle, "BRUSH"
    act(lambda: d.mouse("motion_notify_event", 70, 205), 0.03 * ax_area)  # the brush circle moves
    act(lambda: d.mouse("button_press_event", 70, 205, button=1), 0.03 * ax_area)
    act(lambda: d.mouse("motion_notify_event", 78, 207), 0.03 * ax_area)  # a brush move
    act(lambda: d.mouse("button_release_event", 78, 207, button=1), 0.05 * ax_area)
    act(lambda: d.key("h"), ax_area)
    act(lambda: d.mouse("motion_notify_event", 160, 120), 0.03 * ax_area)  # under the help
    act(lambda: d.key("h"), ax_area)
    act(lambda: d.key("+", at=(100, 80)), ax_area)
    act(lambda: d.key("shift+left"), ax_area)
    act(lambda: d.key("p"), ax_area)
    act(lambda: d.key("u"), ax_area)
    act(lambda: d.key("0"), ax_area)
