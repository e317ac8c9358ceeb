"""Tests for labeler.prompts.guide_state: the editable guides behind the SmartSelector (no GUI needed)."""

from __future__ import annotations

import numpy as np
import pytest

from labeler.prompts.guide_state import MAX_ID, UNDO_DEPTH, GuideState
from labeler.prompts.prompt_set import ObjectGuides

W, H = 160, 120


def disc(cx: int, cy: int, r: int) -> np.ndarray:
    """Pixels whose centre lies within r of (cx, cy), built independently of OpenCV."""
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def segment_distance(a: tuple[int, int], b: tuple[int, int]) -> np.ndarray:
    """Distance of every pixel centre to the segment a..b."""
    yy, xx = np.mgrid[:H, :W].astype(float)
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(xx - ax - t * dx, yy - ay - t * dy)


def masks(state: GuideState, obj_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Copies of an object's paint and erase masks, all-False where absent."""
    obj = state.object(obj_id)
    empty = np.zeros((H, W), bool)
    if obj is None:
        return empty, empty.copy()
    return (empty if obj.paint is None else obj.paint.copy()), (empty.copy() if obj.erase is None else obj.erase.copy())


def inside(rect: tuple[int, int, int, int], changed: np.ndarray) -> bool:
    x0, y0, x1, y1 = rect
    outside = changed.copy()
    outside[y0:y1, x0:x1] = False
    return not outside.any()


# ----------------------------------------------------------------------------------------------
# Box, points, selection


def test_box_is_normalised_clipped_and_replaced():
    state = GuideState(W, H)
    assert state.set_box(200, 100, -5, 20) is True
    assert state.object().box == (0.0, 20.0, float(W), 100.0)
    assert state.set_box(10, 15, 40.5, 30) is True
    assert state.object().box == (10.0, 15.0, 40.5, 30.0)
    assert state.ids() == [1]


def test_thin_box_is_ignored():
    state = GuideState(W, H)
    assert state.set_box(10, 10, 11.5, 50) is False
    assert state.set_box(10, 10, 50, 10) is False
    assert state.set_box(-30, 10, -10, 50) is False  # entirely left of the image: clipped to nothing
    assert state.object() is None and state.ids() == []
    assert state.undo() is False  # nothing was recorded


def test_points_with_labels_are_clipped_into_the_image():
    state = GuideState(W, H)
    state.add_point(50, 60, 1)
    state.add_point(-4, 500, 0)
    obj = state.object()
    assert obj.points == [(50.0, 60.0), (0.0, float(H))]
    assert obj.labels == [1, 0]
    assert obj.box is None and obj.has_prompt
    with pytest.raises(ValueError):
        state.add_point(1, 1, 2)
    assert len(state.object().points) == 2


def test_select_validates_and_edits_go_to_the_current_object():
    state = GuideState(W, H, current_id=3)
    assert state.current_id == 3
    state.add_point(5, 5, 1)
    state.select(7)
    state.set_box(0, 0, 20, 20)
    assert state.ids() == [3, 7]
    assert state.object(3).points == [(5.0, 5.0)] and state.object(3).box is None
    assert state.object().box == (0.0, 0.0, 20.0, 20.0)
    for bad in (0, MAX_ID + 1, -1, True):
        with pytest.raises(ValueError):
            state.select(bad)
    with pytest.raises(ValueError):
        GuideState(W, H, current_id=0)
    state.select(MAX_ID)
    assert state.current_id == MAX_ID


def test_next_unused_id_skips_guided_and_taken_ids_and_selects():
    state = GuideState(W, H, objects=[ObjectGuides(2, box=(1, 1, 9, 9))], taken={1, 3})
    assert state.next_unused_id() == 4 and state.current_id == 4
    state.add_point(3, 3, 1)
    assert state.next_unused_id() == 5
    state.taken.add(5)
    assert state.next_unused_id() == 6 and state.current_id == 6
    assert GuideState(W, H).next_unused_id() == 1


def test_delete_nearest_point_versus_box_outline():
    state = GuideState(W, H)
    state.set_box(10, 10, 110, 110)
    state.add_point(60, 60, 1)  # the box's centre: 50 px from its outline
    state.add_point(115, 60, 0)  # 5 px right of the box
    # (100, 60): outline 10 px away, point (115, 60) 15 px, point (60, 60) 40 px -> the box goes
    assert state.delete_nearest(100, 60) is True
    assert state.object().box is None and state.object().points == [(60.0, 60.0), (115.0, 60.0)]
    state.undo()
    # (63, 58): point (60, 60) ~3.6 px, outline 47 px -> that point and its label go
    assert state.delete_nearest(63, 58) is True
    obj = state.object()
    assert obj.box == (10.0, 10.0, 110.0, 110.0) and obj.points == [(115.0, 60.0)] and obj.labels == [0]
    # outside the box: distance to the box's corner
    assert state.delete_nearest(0, 0, max_distance=14) is False  # corner is ~14.14 px away
    assert state.delete_nearest(0, 0, max_distance=14.2) is True
    assert state.object().box is None
    assert state.delete_nearest(115, 70, max_distance=5) is False
    assert state.delete_nearest(115, 70) is True
    assert state.object() is None and state.ids() == []
    assert state.delete_nearest(1, 1) is False


def test_delete_nearest_leaves_brush_strokes():
    state = GuideState(W, H, brush_radius=3)
    state.begin_stroke(20, 20)
    state.end_stroke()
    assert state.delete_nearest(20, 20) is False
    assert state.object().paint[20, 20]


# ----------------------------------------------------------------------------------------------
# Brush


def test_single_stamps_paint_then_erase_exactly():
    state = GuideState(W, H, brush_radius=8)
    rect = state.begin_stroke(30, 40)
    state.end_stroke()
    assert np.array_equal(state.object().paint, disc(30, 40, 8))
    assert state.object().erase is None  # created on first use only
    assert rect == (22, 32, 39, 49)
    state.brush_radius = 5
    state.begin_stroke(36.4, 39.6, erase=True)  # rounded to pixel (36, 40)
    state.end_stroke()
    obj = state.object()
    assert np.array_equal(obj.paint, disc(30, 40, 8) & ~disc(36, 40, 5))
    assert np.array_equal(obj.erase, disc(36, 40, 5))
    assert obj.paint.dtype == bool and obj.paint.shape == (H, W)
    # painting again over the erased part clears the erase there
    state.begin_stroke(40, 40)
    state.end_stroke()
    assert np.array_equal(state.object().erase, disc(36, 40, 5) & ~disc(40, 40, 5))
    assert np.array_equal(state.object().paint, (disc(30, 40, 8) & ~disc(36, 40, 5)) | disc(40, 40, 5))


@pytest.mark.parametrize("radius", [1, 4, 12])
def test_stroke_segments_cover_the_brush_path(radius):
    path = [(20, 30), (70, 32), (90, 90), (40, 100), (41, 101)]
    state = GuideState(W, H, brush_radius=radius)
    state.begin_stroke(*path[0])
    for p in path[1:]:
        state.extend_stroke(*p)
    state.end_stroke()
    distance = np.min([segment_distance(a, b) for a, b in zip(path, path[1:])], axis=0)
    paint = state.object().paint
    assert paint[distance <= radius].all()  # every pixel within the brush radius of the path
    assert not paint[distance > radius + 0.75].any()  # and nothing beyond OpenCV's rasterisation


def test_paint_stroke_then_erase_stroke_across_it():
    state = GuideState(W, H, brush_radius=6)
    state.begin_stroke(20, 50)
    state.extend_stroke(140, 50)
    state.end_stroke()
    painted = state.object().paint.copy()
    state.brush_radius = 4
    state.begin_stroke(80, 10, erase=True)
    state.extend_stroke(80, 110)
    state.end_stroke()
    # a vertical erase stroke: the brush covers exactly the columns 76..84 between the end caps
    band = np.zeros((H, W), bool)
    band[10:111, 76:85] = True
    erased = band | disc(80, 10, 4) | disc(80, 110, 4)
    obj = state.object()
    assert np.array_equal(obj.erase, erased)
    assert np.array_equal(obj.paint, painted & ~erased)
    assert obj.paint[50, 70] and not obj.paint[50, 80] and obj.paint[50, 90]


def test_dirty_rectangles_hold_every_change_and_are_small():
    radius = 5
    state = GuideState(W, H, brush_radius=radius)
    calls = [
        lambda: state.begin_stroke(30, 30),
        lambda: state.extend_stroke(36, 33),
        lambda: state.extend_stroke(40, 45),
        lambda: state.extend_stroke(158, 118),  # runs off the bottom-right corner
        lambda: state.extend_stroke(170, 130),
    ]
    for erase in (False, True):
        for k, call in enumerate(calls):
            if k == 0 and erase:
                call = lambda: state.begin_stroke(35, 28, erase=True)  # noqa: E731
            before = masks(state)
            rect = call()
            after = masks(state)
            changed = (before[0] != after[0]) | (before[1] != after[1])
            assert inside(rect, changed), (erase, k, rect)
            x0, y0, x1, y1 = rect
            assert 0 <= x0 <= x1 <= W and 0 <= y0 <= y1 <= H
        state.end_stroke()
    # a short segment's rectangle is the bounding box of its two stamps
    state.begin_stroke(50, 60)
    assert state.extend_stroke(56, 63) == (45, 55, 62, 69)
    assert state.extend_stroke(56, 63) == (51, 58, 62, 69)
    state.end_stroke()
    # clipped at the border, empty when the brush is off the image
    assert state.begin_stroke(2, 3) == (0, 0, 8, 9)
    assert state.extend_stroke(-50, -50) == (0, 0, 8, 9)
    assert state.extend_stroke(-60, -40) == (0, 0, 0, 0)
    state.end_stroke()


def test_stroke_is_one_undo_step():
    state = GuideState(W, H, brush_radius=3)
    state.set_box(5, 5, 50, 50)
    state.begin_stroke(10, 10)
    for x in range(12, 80, 4):
        state.extend_stroke(x, 20)
    state.end_stroke()
    stroke = masks(state)[0]
    assert stroke.sum() > 100
    assert state.undo() is True
    obj = state.object()
    assert obj.box == (5.0, 5.0, 50.0, 50.0) and obj.paint is None
    assert state.redo() is True
    assert np.array_equal(state.object().paint, stroke)
    assert state.undo() and state.undo()
    assert state.object() is None and state.undo() is False


def test_stroke_changing_nothing_is_no_step():
    state = GuideState(W, H, brush_radius=3)
    state.begin_stroke(10, 10)
    state.end_stroke()
    paint = state.object().paint.copy()
    revision = state.revision(1)
    state.begin_stroke(10, 10)  # paints what is already painted
    state.end_stroke()
    state.begin_stroke(-20, -20, erase=True)  # off the image
    state.extend_stroke(-30, 5)
    state.end_stroke()
    assert state.revision(1) == revision
    assert state.undo() is True and state.object() is None and state.undo() is False
    assert state.redo() and np.array_equal(state.object().paint, paint)


def test_erasing_all_paint_leaves_an_erase_only_object_without_guide():
    state = GuideState(W, H, brush_radius=3)
    state.begin_stroke(20, 20)
    state.end_stroke()
    state.brush_radius = 10
    state.begin_stroke(20, 20, erase=True)
    state.end_stroke()
    obj = state.object()
    assert obj.paint is None and obj.erase is not None and not obj.has_guide
    assert state.ids() == [1] and state.guides() == []
    state.set_box(0, 0, 40, 40)  # erase alongside a box is a guide
    [guide] = state.guides()
    assert guide.box == (0.0, 0.0, 40.0, 40.0) and np.array_equal(guide.erase, disc(20, 20, 10))


def test_an_edit_during_a_stroke_ends_it_first():
    state = GuideState(W, H, brush_radius=3)
    state.begin_stroke(10, 10)
    state.extend_stroke(30, 10)
    state.select(2)
    assert state.extend_stroke(50, 10) == (0, 0, 0, 0)  # the drag goes on in the view: nothing drawn
    assert state.object(2) is None and not state.object(1).paint[10, 50]
    state.begin_stroke(60, 60)
    assert state.undo() is True  # ends the stroke on object 2, then undoes it
    assert state.ids() == [1] and state.object(1).paint[10, 30]


def test_brush_radius_is_clamped():
    assert GuideState(W, H, brush_radius=0).brush_radius == 1
    assert GuideState(W, H, brush_radius=500).brush_radius == 200
    state = GuideState(W, H)
    assert state.brush_radius == 12
    state.brush_radius = -3
    assert state.brush_radius == 1
    state.brush_radius = 7.6
    assert state.brush_radius == 8
    state.brush_radius = 201
    assert state.brush_radius == 200


def test_a_large_brush_paints_the_whole_small_image():
    state = GuideState(8, 6, brush_radius=200)
    assert state.begin_stroke(4, 3) == (0, 0, 8, 6)
    state.end_stroke()
    assert state.object().paint.all()


# ----------------------------------------------------------------------------------------------
# Undo and redo


def test_undo_redo_across_objects_and_after_clear():
    state = GuideState(W, H, brush_radius=3)
    state.set_box(0, 0, 30, 30)  # 1
    state.select(2)
    state.add_point(5, 5, 1)  # 2
    state.begin_stroke(50, 50)  # 2
    state.end_stroke()
    state.select(1)
    state.add_point(9, 9, 0)  # 1
    state.select(2)
    state.clear()  # 2
    assert state.ids() == [1] and state.object() is None

    assert state.undo()  # the clear
    obj2 = state.object(2)
    assert obj2.points == [(5.0, 5.0)] and np.array_equal(obj2.paint, disc(50, 50, 3))
    assert state.current_id == 2  # undo does not change the selection
    assert state.undo()  # object 1's point
    assert state.object(1).points == [] and state.object(1).box == (0.0, 0.0, 30.0, 30.0)
    assert state.undo()  # object 2's stroke
    assert state.object(2).paint is None
    assert state.undo() and state.undo()
    assert state.ids() == [] and state.undo() is False

    for _ in range(5):
        assert state.redo()
    assert state.redo() is False
    assert state.ids() == [1] and state.object(1).points == [(9.0, 9.0)]
    assert state.undo() and np.array_equal(state.object(2).paint, disc(50, 50, 3))


def test_clear_of_nothing_is_no_step():
    state = GuideState(W, H)
    state.clear()
    assert state.undo() is False


def test_a_new_change_clears_redo():
    state = GuideState(W, H)
    state.add_point(1, 1, 1)
    state.add_point(2, 2, 1)
    assert state.undo()
    state.select(4)
    state.add_point(3, 3, 0)
    assert state.redo() is False
    assert state.object(1).points == [(1.0, 1.0)]
    # a stroke is a change too
    assert state.undo()
    state.begin_stroke(20, 20)
    state.end_stroke()
    assert state.redo() is False


def test_undo_depth_is_at_least_100():
    assert UNDO_DEPTH >= 100
    state = GuideState(W, H)
    for k in range(UNDO_DEPTH + 20):
        state.add_point(k % W, 1, 1)
    undone = 0
    while state.undo():
        undone += 1
    assert undone == UNDO_DEPTH
    assert len(state.object().points) == 20


def test_undo_steps_share_masks_instead_of_copying():
    state = GuideState(W, H, brush_radius=3)
    state.begin_stroke(20, 20)
    state.end_stroke()
    paint = state.object().paint
    for k in range(10):
        state.add_point(k, k, 1)
    assert all(prev.paint is paint for _, prev in list(state._undo)[1:])
    state.begin_stroke(40, 40)  # strokes write to a private copy: earlier steps are unharmed
    state.end_stroke()
    assert state.object().paint is not paint and not paint[40, 40]


# ----------------------------------------------------------------------------------------------
# Revisions


def test_revision_and_prompt_revision():
    state = GuideState(W, H, brush_radius=3)
    assert state.revision(1) == 0 and state.prompt_revision(1) == 0
    state.set_box(0, 0, 30, 30)
    r1, p1 = state.revision(1), state.prompt_revision(1)
    assert r1 > 0 and p1 > 0

    state.begin_stroke(10, 10)
    r_begin = state.revision(1)
    state.extend_stroke(20, 10)
    r_extend = state.revision(1)
    state.end_stroke()
    assert r1 < r_begin < r_extend  # every changing stamp, so a live preview can follow the stroke
    assert state.prompt_revision(1) == p1  # brush strokes don't rerun the decoder

    state.add_point(5, 5, 1)
    r2, p2 = state.revision(1), state.prompt_revision(1)
    assert r2 > r_extend and p2 > p1

    state.select(2)
    state.add_point(1, 1, 1)
    assert state.revision(1) == r2 and state.prompt_revision(1) == p2  # other objects don't count

    state.undo()  # object 2's point
    assert state.revision(1) == r2
    state.undo()  # object 1's point: a prompt change
    r3, p3 = state.revision(1), state.prompt_revision(1)
    assert r3 > r2 and p3 > p2
    state.undo()  # object 1's stroke: not a prompt change
    assert state.revision(1) > r3 and state.prompt_revision(1) == p3
    state.redo()
    assert state.prompt_revision(1) == p3
    state.redo()
    assert state.prompt_revision(1) > p3

    state.select(1)
    p4 = state.prompt_revision(1)
    state.clear()
    assert state.prompt_revision(1) > p4


# ----------------------------------------------------------------------------------------------
# guides()


def test_guides_lists_guided_objects_sorted_as_safe_copies():
    paint = disc(40, 40, 5)
    given = ObjectGuides(9, paint=paint)
    state = GuideState(W, H, objects=[given, ObjectGuides(4, points=[(3, 4)], labels=[1])], brush_radius=2)
    paint[:] = False  # the state holds its own copy
    state.select(6)
    state.add_point(1, 1, 0)
    state.delete_nearest(1, 1)  # object 6 has nothing left
    assert state.ids() == [4, 9]
    guides = state.guides()
    assert [g.id for g in guides] == [4, 9]
    assert np.array_equal(guides[1].paint, disc(40, 40, 5))
    assert guides[0] == ObjectGuides(4, points=[(3, 4)], labels=[1])

    state.select(9)
    state.begin_stroke(100, 100)
    state.end_stroke()
    state.select(4)
    state.add_point(7, 7, 1)
    state.set_box(0, 0, 10, 10)
    assert guides[0] == ObjectGuides(4, points=[(3, 4)], labels=[1])  # unchanged by later edits
    assert np.array_equal(guides[1].paint, disc(40, 40, 5))
    guides[1].paint[:] = True  # and changing them doesn't touch the state
    guides[0].points.append((0, 0))
    assert not state.object(9).paint[0, 0] and len(state.object(4).points) == 2


def test_constructor_checks_objects():
    with pytest.raises(ValueError):
        GuideState(W, H, objects=[ObjectGuides(1, box=(0, 0, 5, 5)), ObjectGuides(1, points=[(1, 1)], labels=[1])])
    with pytest.raises(ValueError):
        GuideState(W, H, objects=[ObjectGuides(1, paint=np.ones((H, W + 1), bool))])
    with pytest.raises(ValueError):
        GuideState(W, H, objects=[ObjectGuides(0, box=(0, 0, 5, 5))])
    state = GuideState(W, H, objects=[ObjectGuides(3, paint=np.zeros((H, W), bool))])
    assert state.ids() == []
