"""cmosx.io reading: every format and bit depth, orientation, alpha, CMYK, RAW, and bad files refused cleanly."""

import struct
import time
import zlib

import imagecodecs
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms, ImageOps

from cmosx.errors import InputImageError
from cmosx.io import read_image

H, W = 24, 32


def pattern(channels=3, dtype=np.uint8, seed=0):
    """An asymmetric H x W x channels test picture (gradients plus seeded noise)."""
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([x / (W - 1), y / (H - 1), (x + y) / (W + H - 2), 1 - x / (W - 1)], axis=-1)[..., :channels]
    noisy = np.clip(base * 0.8 + rng.random((H, W, channels)) * 0.2, 0, 1)
    return np.round(noisy * peak).astype(dtype)


def srgb_icc():
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_jpeg_png_webp_bmp_tiff_8bit_rgb(tmp_path):
    array = pattern()
    for ext, options in [(".png", {}), (".bmp", {}), (".tif", {}), (".webp", {"lossless": True}), (".jpg", {})]:
        path = tmp_path / f"photo{ext}"
        Image.fromarray(array).save(path, **options)
        photo = read_image(path)
        assert photo.size == (W, H) and photo.bit_depth == 8 and photo.color.shape == (3, H, W)
        assert photo.alpha is None and photo.color.dtype == torch.float32
        expected = torch.from_numpy(array).permute(2, 0, 1).float() / 255
        tolerance = 0.2 if ext == ".jpg" else 1e-6
        assert (photo.color - expected).abs().max() <= tolerance, ext


def test_16bit_rgb_png_keeps_16_bits_even_when_values_are_small(tmp_path):
    bright = pattern(dtype=np.uint16)
    dark = (bright // 512).astype(np.uint16)  # every value < 256: still a 16-bit file
    for name, array in [("bright.png", bright), ("dark.png", dark)]:
        (tmp_path / name).write_bytes(imagecodecs.png_encode(array))
        photo = read_image(tmp_path / name)
        assert photo.bit_depth == 16 and photo.color.shape == (3, H, W)
        expected = torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1) / 65535
        assert torch.allclose(photo.color, expected, atol=1e-7)


def test_8bit_png_with_large_values_is_8bit(tmp_path):
    Image.fromarray(np.full((H, W, 3), 255, np.uint8)).save(tmp_path / "white.png")
    assert read_image(tmp_path / "white.png").bit_depth == 8


def test_16bit_grayscale_png_and_tiff(tmp_path):
    grey = pattern(1, np.uint16)[:, :, 0]
    (tmp_path / "g.png").write_bytes(imagecodecs.png_encode(grey))
    tifffile.imwrite(tmp_path / "g.tif", grey, photometric="minisblack")
    for name in ("g.png", "g.tif"):
        photo = read_image(tmp_path / name)
        assert photo.is_grayscale and photo.bit_depth == 16 and photo.color.shape == (1, H, W)
        assert torch.allclose(photo.color[0], torch.from_numpy(grey.astype(np.float32)) / 65535)


def test_16bit_rgb_tiff_with_premultiplied_alpha_is_unpremultiplied(tmp_path):
    rgba = pattern(4, np.uint16).astype(np.float64) / 65535
    rgba[..., 3] = np.linspace(0.2, 1.0, W)[None, :]
    premultiplied = rgba.copy()
    premultiplied[..., :3] *= rgba[..., 3:]
    stored = np.round(premultiplied * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", stored, photometric="rgb", extrasamples=["assocalpha"])
    photo = read_image(tmp_path / "a.tif")
    assert photo.bit_depth == 16 and photo.alpha is not None
    straight = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float()
    assert (photo.color - straight).abs().max() < 1e-3
    assert any("premultiplied" in note for note in photo.notes)


def test_straight_alpha_png_grey_alpha_and_palette_transparency(tmp_path):
    Image.fromarray(pattern(4)).save(tmp_path / "rgba.png")
    photo = read_image(tmp_path / "rgba.png")
    assert photo.color.shape == (3, H, W) and photo.alpha.shape == (1, H, W)
    assert torch.allclose(photo.alpha[0], torch.from_numpy(pattern(4)[..., 3]).float() / 255)

    Image.fromarray(pattern(2), "LA").save(tmp_path / "la.png")
    photo = read_image(tmp_path / "la.png")
    assert photo.is_grayscale and photo.alpha is not None

    palette = Image.fromarray(pattern()).quantize(8)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    photo = read_image(tmp_path / "p.png")
    assert photo.color.shape[0] == 3 and photo.alpha is not None and photo.alpha.min() == 0


def test_grayscale_jpeg_stays_grayscale(tmp_path):
    Image.fromarray(pattern(1)[:, :, 0], "L").save(tmp_path / "g.jpg")
    photo = read_image(tmp_path / "g.jpg")
    assert photo.is_grayscale and photo.bit_depth == 8


def test_cmyk_jpeg_is_converted_with_a_note(tmp_path):
    Image.fromarray(pattern()).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    photo = read_image(tmp_path / "c.jpg")
    assert photo.color.shape == (3, H, W)
    assert any("CMYK" in note for note in photo.notes)
    expected = torch.from_numpy(pattern()).permute(2, 0, 1).float() / 255
    assert (photo.color - expected).abs().mean() < 0.05


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow_and_reset(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(pattern()).save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    photo = read_image(path)
    got = np.round(photo.color.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert got.shape == expected.shape and np.array_equal(got, expected)
    assert photo.metadata.exif[0x0112] == 1


def test_metadata_is_read(tmp_path):
    icc = srgb_icc()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="1"/></x:xmpmeta>'
    Image.fromarray(pattern()).save(tmp_path / "m.jpg", exif=exif.tobytes(), icc_profile=icc, xmp=xmp)
    photo = read_image(tmp_path / "m.jpg")
    assert photo.metadata.icc_profile == icc
    assert photo.metadata.exif[0x010F] == "TestCam"
    assert photo.metadata.exif.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
    assert photo.metadata.xmp == xmp


def test_dng_is_developed_to_16bit_srgb(tmp_path, write_dng):
    write_dng(tmp_path / "shot.dng", W, H)
    photo = read_image(tmp_path / "shot.dng")
    assert photo.source_format == "RAW" and photo.bit_depth == 16 and photo.size == (W, H)
    assert photo.color.shape == (3, H, W) and 0.05 < float(photo.color.mean()) < 0.95
    assert photo.metadata.icc_profile is not None  # tagged sRGB
    assert photo.metadata.exif[0x010F] == "TestCam" and photo.metadata.exif[0x0110] == "T1"


def _png_claiming(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_huge_png_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(50000, 50000))
    start = time.perf_counter()
    with pytest.raises(InputImageError, match="bomb.png.*(pixels|limit)"):
        read_image(path)
    assert time.perf_counter() - start < 1.0


def test_pixel_limit_is_configurable(tmp_path):
    Image.fromarray(pattern()).save(tmp_path / "p.png")
    with pytest.raises(InputImageError, match="over the limit"):
        read_image(tmp_path / "p.png", max_pixels=100)
    assert read_image(tmp_path / "p.png", max_pixels=H * W).size == (W, H)


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(pattern()).save(good)
    cases = {
        "empty.jpg": b"",
        "corrupt.jpg": np.random.default_rng(1).bytes(500),
        "truncated.jpg": good.read_bytes()[: len(good.read_bytes()) // 2],
        "notes.txt": b"hello",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    Image.fromarray(pattern()).save(tmp_path / "anim.gif")
    for name in [*cases, "anim.gif", "missing.png"]:
        with pytest.raises(InputImageError) as caught:
            read_image(tmp_path / name)
        message = str(caught.value)
        assert name in message and "\n" not in message, message


def test_float_tiff_and_cmyk_tiff(tmp_path):
    values = pattern(dtype=np.uint16).astype(np.float32) / 65535
    tifffile.imwrite(tmp_path / "f.tif", values * 1.2 - 0.1, photometric="rgb")  # out-of-range values clipped
    photo = read_image(tmp_path / "f.tif")
    assert photo.bit_depth == 16 and photo.color.min() >= 0 and photo.color.max() <= 1
    assert any("floating-point" in note for note in photo.notes)
    Image.fromarray(pattern()).convert("CMYK").save(tmp_path / "c.tif")
    photo = read_image(tmp_path / "c.tif")
    assert photo.color.shape == (3, H, W) and any("CMYK" in note for note in photo.notes)
