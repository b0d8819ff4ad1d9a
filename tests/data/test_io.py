from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import save, texture
from defectkit.data.io import ImageReadError, convert_channels, load_sample, read_image, read_mask
from defectkit.data.sample import Sample


def test_read_image_gray_rgb_and_equal_channel_rgb(tmp_path: Path) -> None:
    gray = save(tmp_path / "g.png", texture(0))
    rgb = save(tmp_path / "c.png", texture(1, channels=3))
    equal = save(tmp_path / "e.png", np.repeat(texture(2)[..., None], 3, axis=2))
    assert read_image(gray).shape == (64, 48)
    assert read_image(rgb).shape == (64, 48, 3)
    assert read_image(equal).shape == (64, 48)  # NEU's JPEGs: three equal channels are grayscale
    assert read_image(gray, channels=3).shape == (64, 48, 3)
    assert read_image(rgb, channels=1).shape == (64, 48)


def test_palette_images_keep_their_colours(tmp_path: Path) -> None:
    from PIL import Image

    from defectkit.data.io import decode_image

    colour = np.zeros((8, 8, 3), dtype=np.uint8)
    colour[..., 0], colour[4:, :, 2] = 200, 30
    path = tmp_path / "indexed.png"
    Image.fromarray(colour).quantize(4).save(path)  # a palette (P mode) PNG, as GIFs and many tools write
    assert np.array_equal(read_image(path), colour)
    assert np.array_equal(decode_image(path.read_bytes()).pixels, colour)  # the service's decoder
    assert read_image(path, channels=1).shape == (8, 8)
    grey_palette = save(tmp_path / "grey.png", texture(3), palette=True)
    assert read_image(grey_palette).shape == (64, 48)  # an all-grey palette stays one channel


def test_truncated_and_missing_images_raise_with_the_file_name(tmp_path: Path) -> None:
    good = save(tmp_path / "ok.jpg", texture(0, 128, 128))
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg"):
        read_image(truncated)
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "absent.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"text\.png"):
        read_image(tmp_path / "text.png")


@pytest.mark.parametrize("raised", [EOFError("no more data"), IndexError("tile out of range")])
def test_any_decoder_failure_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: Exception
) -> None:
    import defectkit.data.io as image_io

    def damaged(*_: object) -> np.ndarray:
        raise raised  # what Pillow's decoders raise on some damaged files

    path = save(tmp_path / "odd.gif", texture(0))
    monkeypatch.setattr(image_io, "_decode", damaged)
    with pytest.raises(ImageReadError, match=rf"odd\.gif: cannot decode image \({type(raised).__name__}"):
        read_image(path)


def test_read_mask_binarises_0_255_and_keeps_class_ids(tmp_path: Path) -> None:
    binary = np.zeros((8, 8), np.uint8)
    binary[2:4, 2:4] = 255
    assert set(np.unique(read_mask(save(tmp_path / "b.png", binary)))) == {0, 1}
    ids = np.zeros((8, 8), np.uint8)
    ids[0, 0], ids[1, 1] = 1, 3
    assert set(np.unique(read_mask(save(tmp_path / "i.png", ids)))) == {0, 1, 3}
    assert set(np.unique(read_mask(save(tmp_path / "p.bmp", binary, palette=True)))) == {0, 1}


def test_load_sample_reads_mask_references_and_checks_sizes(tmp_path: Path) -> None:
    image = save(tmp_path / "x.png", texture(0))
    mask = np.zeros((64, 48), np.uint8)
    mask[5:9, 5:9] = 255
    sample = Sample(
        str(image), meta={"mask_path": str(save(tmp_path / "x_label.png", mask)), "mask_class": 2}
    )
    loaded = load_sample(sample)
    assert loaded.image is not None and loaded.mask is not None
    assert set(np.unique(loaded.mask)) == {0, 2}
    assert "mask_path" not in loaded.meta and loaded.meta["mask_source"].endswith("x_label.png")
    assert sample.image is None  # the index sample is untouched

    empty = load_sample(Sample(str(image), meta={"mask_empty": True}))
    assert empty.mask is not None and empty.mask.shape == (64, 48) and not empty.mask.any()

    wrong = Sample(
        str(image), meta={"mask_path": str(save(tmp_path / "w.png", np.zeros((10, 10), np.uint8)))}
    )
    with pytest.raises(ImageReadError, match=r"w.png: mask is 10x10 but image .*x.png is 48x64"):
        load_sample(wrong)


def test_convert_channels_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="channels"):
        convert_channels(np.zeros((2, 2), np.uint8), 2)


def test_read_mask_keeps_a_lone_class_id(tmp_path: Path) -> None:
    ids = np.zeros((8, 8), np.uint8)
    ids[2:4, 2:4] = 3
    assert set(np.unique(read_mask(save(tmp_path / "three.png", ids)))) == {0, 3}


def test_a_float_image_is_refused_not_read_as_black(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "float.tif"
    Image.fromarray(np.random.default_rng(0).random((16, 16), dtype=np.float32)).save(path)
    with pytest.raises(ImageReadError, match=r"float\.tif: .*32-bit float pixels"):
        read_image(path)
