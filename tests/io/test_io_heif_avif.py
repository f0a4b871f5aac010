"""HEIC/HEIF (pillow-heif) and AVIF (Pillow; 10-bit through imagecodecs): orientation, metadata, depth, outputs."""

from pathlib import Path

import imagecodecs
import numpy as np
import pillow_heif
import pytest
import torch
from PIL import Image, ImageCms

from cmosx.errors import UsageError
from cmosx.io import read_image, write_image
from cmosx.io.formats import avif_writable, is_image_path, output_extension
from cmosx.io.heif import av1_bit_depth

H, W = 16, 24
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _marked(seed=0):
    """A smooth 8-bit RGB image with a white 4 x 4 block in the top-left corner (to see the orientation)."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 255 / W, y * 255 / H, np.full((H, W), 60.0 + seed)], axis=-1).astype(np.uint8)
    rgb[:4, :4] = 255
    return rgb


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    return exif.tobytes()


def _write_heic(path, rgb, orientation=1):
    pillow_heif.register_heif_opener()
    Image.fromarray(rgb).save(path, exif=_exif(orientation), icc_profile=SRGB, quality=95)
    return path


def _white_corner(photo):
    colour = photo.color.permute(1, 2, 0).numpy()
    rows, cols = np.nonzero(colour.min(axis=2) > 0.9)
    return int(np.median(rows)) < photo.height // 2, int(np.median(cols)) < photo.width // 2


def test_heic_is_read_upright_with_exif_and_icc(tmp_path):
    photo = read_image(_write_heic(tmp_path / "phone.heic", _marked(), orientation=6))
    assert photo.source_format == "HEIF" and photo.bit_depth == 8
    assert (photo.height, photo.width) == (W, H)  # orientation 6: turned a quarter clockwise
    assert _white_corner(photo) == (True, False)  # the top-left block is now top-right
    assert photo.metadata.exif[0x0112] == 1 and photo.metadata.exif[0x010F] == "TestCam"
    assert photo.metadata.icc_profile == SRGB
    assert is_image_path(Path("a.HEIC")) and is_image_path(Path("a.hif")) and is_image_path(Path("a.avif"))


def test_avif_is_read_upright_with_exif_and_icc(tmp_path):
    path = tmp_path / "web.avif"
    Image.fromarray(_marked()).save(path, exif=_exif(8), icc_profile=SRGB, quality=95)
    photo = read_image(path)
    assert photo.source_format == "AVIF" and photo.bit_depth == 8 and av1_bit_depth(path.read_bytes()) == 8
    assert (photo.height, photo.width) == (W, H)  # orientation 8: turned a quarter counter-clockwise
    assert _white_corner(photo) == (False, True)  # the top-left block is now bottom-left
    assert photo.metadata.exif[0x0112] == 1 and photo.metadata.icc_profile == SRGB


def _gradient16():
    """A smooth 16-bit RGB gradient with levels 8 bits cannot hold."""
    y, x = np.mgrid[0:H, 0:W]
    values = np.stack([x / (W - 1), y / (H - 1), (x + y) / (W + H - 2)], axis=-1) * 0.6 + 0.2
    return (values * 65535).round().astype(np.uint16)


def test_10bit_avif_and_heic_keep_their_depth_into_16bit_png_and_tiff(tmp_path):
    source = _gradient16()
    ten = (source.astype(np.float64) / 65535 * 1023).round().astype(np.uint16)
    avif = tmp_path / "deep.avif"
    avif.write_bytes(imagecodecs.avif_encode(ten, level=100, bitspersample=10))  # lossless
    assert av1_bit_depth(avif.read_bytes()) == 10
    photo = read_image(avif)
    assert photo.bit_depth == 16 and "10-bit AVIF held as 16-bit" in photo.notes
    expected = torch.from_numpy(ten.astype(np.float32) / 1023).permute(2, 0, 1)
    assert torch.allclose(photo.color, expected, atol=1e-5)  # lossless, then held on the 16-bit scale

    heic = tmp_path / "deep.heic"
    pillow_heif.from_bytes(mode="RGB;16", size=(W, H), data=source.tobytes()).save(heic, quality=-1)
    deep = read_image(heic)
    assert deep.bit_depth == 16 and "10-bit HEIC held as 16-bit" in deep.notes
    reference = torch.from_numpy(source.astype(np.float32) / 65535).permute(2, 0, 1)
    assert float((deep.color - reference).abs().mean()) < 4 / 255  # lossy HEVC (4:2:0 chroma), but close
    levels = (deep.color * 1023).round() / 1023
    assert torch.allclose(deep.color, levels, atol=1e-5)  # on the 10-bit grid, scaled to the full range
    assert not torch.allclose(deep.color, (deep.color * 255).round() / 255, atol=1e-4)  # finer than 8 bits

    for name in ("deep.png", "deep.tif"):
        write_image(deep, tmp_path / name)
        again = read_image(tmp_path / name)
        assert again.bit_depth == 16 and torch.allclose(again.color, deep.color, atol=1 / 65535)


def test_output_formats_for_phone_and_web_photos(tmp_path):
    assert output_extension(Path("IMG_0001.HEIC"), "same") == ".jpg"
    assert output_extension(Path("a.heif"), "same") == ".jpg"
    assert output_extension(Path("a.avif"), "same") == (".avif" if avif_writable() else ".png")
    assert output_extension(Path("a.heic"), "png") == ".png"
    if not avif_writable():
        with pytest.raises(UsageError, match="cannot write AVIF"):
            output_extension(Path("a.jpg"), "avif")
        return
    assert output_extension(Path("a.jpg"), "avif") == ".avif"
    photo = read_image(_write_heic(tmp_path / "phone.heic", _marked(), orientation=6))
    grey = photo.with_pixels(photo.color[:1], None)
    for source, name in ((photo, "out.avif"), (grey, "grey.avif")):
        notes = write_image(source, tmp_path / name, quality=90)
        again = read_image(tmp_path / name)
        assert again.source_format == "AVIF" and (again.height, again.width) == (W, H)
        assert again.metadata.exif[0x010F] == "TestCam" and again.metadata.icc_profile == SRGB
        assert float((again.rgb() - source.rgb()).abs().mean()) < 8 / 255  # lossy, small
    assert any("grayscale" in note for note in notes)
