"""Reading targets as people's folders hold them: EXIF orientation, modes, bit depths."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from labeler.utils.images import ImageReadError, list_images, read_rgb, upright_size


def _gradient(w=40, h=30):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 6, yy * 8, (xx + yy) * 3], -1).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured(tmp_path, orientation):
    rgb = _gradient()
    img = Image.fromarray(rgb)
    # The file holds the pixels as a camera would, with the tag saying how to turn them upright.
    stored = img.transpose({2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM,
                            5: Image.TRANSPOSE, 6: Image.ROTATE_90, 7: Image.TRANSVERSE,
                            8: Image.ROTATE_270}[orientation]) if orientation > 1 else img
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    stored.save(path, exif=exif)
    np.testing.assert_array_equal(read_rgb(path), rgb)
    assert upright_size(path) == (40, 30)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16"])
def test_modes_become_8bit_rgb(tmp_path, mode):
    rgb = _gradient()
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
        expected = np.repeat(rgb[..., :1], 3, axis=-1)
    else:
        img = Image.fromarray(rgb).convert(mode)
        expected = np.asarray(img.convert("RGB")) if mode != "I;16" else None
    path = tmp_path / ("img.tif" if mode == "CMYK" else "img.png")
    img.save(path)
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out, expected)


def test_unreadable_files_raise_a_clear_error(tmp_path):
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("text.jpg", "empty.png"):
        with pytest.raises(ImageReadError, match=f"{name}: cannot read image"):
            read_rgb(tmp_path / name)


def test_list_images_skips_hidden_files_and_folders(tmp_path):
    for name in ("b.jpg", "a.PNG", ".hidden.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "d.jpg").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg"]
