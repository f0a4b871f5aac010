"""cmosx.io writing: bit depth, grey, alpha, EXIF/XMP/ICC carried and updated, JPEG quality, atomic writes."""

import io
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, ImageCms

from cmosx.errors import OutputError
from cmosx.io import Photo, PhotoMetadata, read_image, write_image

H, W = 24, 32


def photo(channels=3, alpha=False, bit_depth=8, metadata=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    color = torch.rand(channels, H, W, generator=generator)
    a = torch.rand(1, H, W, generator=generator) * 0.8 + 0.2 if alpha else None
    return Photo(color, a, bit_depth, "PNG", metadata or PhotoMetadata())


def test_16bit_kept_in_png_and_tiff_and_reduced_for_jpeg_webp(tmp_path):
    source = photo(bit_depth=16)
    for ext, depth in [(".png", 16), (".tif", 16), (".jpg", 8), (".webp", 8), (".bmp", 8)]:
        notes = write_image(source, tmp_path / f"o{ext}")
        back = read_image(tmp_path / f"o{ext}")
        assert back.bit_depth == depth and back.size == (W, H), ext
        if depth == 16:
            assert (back.color - source.color).abs().max() <= 0.5 / 65535 + 1e-7
        else:
            assert any("8 bits" in note for note in notes)


def test_grayscale_stays_grayscale(tmp_path):
    for depth, exts in [(8, [".png", ".tif", ".jpg", ".webp", ".bmp"]), (16, [".png", ".tif"])]:
        for ext in exts:
            write_image(photo(channels=1, bit_depth=depth), tmp_path / f"g{depth}{ext}")
            back = read_image(tmp_path / f"g{depth}{ext}")
            if ext != ".webp":  # WebP has no grey mode; it comes back as RGB with equal channels
                assert back.is_grayscale, ext
            assert back.bit_depth == depth


def test_alpha_kept_where_the_format_has_it_and_flattened_for_jpeg(tmp_path):
    source = photo(alpha=True, bit_depth=16)
    for ext in [".png", ".tif"]:
        write_image(source, tmp_path / f"a{ext}")
        back = read_image(tmp_path / f"a{ext}")
        assert back.alpha is not None and (back.alpha - source.alpha).abs().max() < 1e-4
        assert (back.color - source.color).abs().max() < 1e-4
    for depth, ext in [(8, ".png"), (16, ".png"), (8, ".tif"), (16, ".tif")]:
        grey = photo(channels=1, alpha=True, bit_depth=depth)
        write_image(grey, tmp_path / f"la{depth}{ext}")
        back = read_image(tmp_path / f"la{depth}{ext}")
        assert back.is_grayscale and back.bit_depth == depth and back.alpha is not None, (depth, ext)
        assert (back.alpha - grey.alpha).abs().max() <= 0.5 / (2**depth - 1) + 1e-6
    write_image(photo(alpha=True), tmp_path / "a.webp", quality=100)
    assert read_image(tmp_path / "a.webp").alpha is not None
    notes = write_image(source, tmp_path / "a.jpg")
    assert read_image(tmp_path / "a.jpg").alpha is None and any("alpha" in note for note in notes)


def _exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """A hand-built EXIF blob: IFD0 (Make, Orientation 6) chained to IFD1 holding a JPEG thumbnail."""
    ifd0_offset = 8
    ifd1_offset = ifd0_offset + 2 + 2 * 12 + 4
    thumb_offset = ifd1_offset + 2 + 3 * 12 + 4
    out = b"II*\x00" + struct.pack("<I", ifd0_offset)
    out += struct.pack("<H", 2)
    out += struct.pack("<HHI", 0x010F, 2, 4) + b"Cam\x00"
    out += struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)
    out += struct.pack("<I", ifd1_offset)
    out += struct.pack("<H", 3)
    out += struct.pack("<HHIHH", 0x0103, 3, 1, 6, 0)
    out += struct.pack("<HHII", 0x0201, 4, 1, thumb_offset)
    out += struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail))
    out += struct.pack("<I", 0)
    return b"Exif\x00\x00" + out + thumbnail


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
    b'tiff:Orientation="6" exif:PixelXDimension="24" exif:PixelYDimension="32"><dc:title>Lake</dc:title>'
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
)


def test_metadata_carried_sizes_updated_orientation_reset_thumbnail_dropped(tmp_path):
    thumb = io.BytesIO()
    Image.new("RGB", (8, 6), (250, 10, 10)).save(thumb, "JPEG")
    thumbnail = thumb.getvalue()
    source_path = tmp_path / "in.jpg"
    Image.fromarray(np.zeros((W, H, 3), np.uint8)).save(source_path, exif=_exif_with_thumbnail(thumbnail), xmp=XMP)
    source = read_image(source_path)
    assert Image.open(source_path).getexif().get_ifd(ExifTags.IFD.IFD1)  # the fixture has a thumbnail
    assert source.size == (W, H)  # orientation 6 applied: stored 24 x 32 comes out 32 x 24
    source.metadata.exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    source.metadata.exif.get_ifd(0x8825)[1] = "N"
    big = source.with_pixels(torch.rand(3, 4 * H, 4 * W), None)
    for ext in [".jpg", ".png", ".tif", ".webp"]:
        out = tmp_path / f"out{ext}"
        write_image(big, out)
        assert thumbnail not in out.read_bytes(), ext
        with Image.open(out) as image:
            exif = image.getexif()
            assert exif[0x010F] == "Cam" and exif.get(0x0112, 1) == 1, ext
            sub = exif.get_ifd(0x8769)
            assert sub[0xA002] == 4 * W and sub[0xA003] == 4 * H, ext
            assert sub[0x9003] == "2024:05:06 07:08:09" and exif.get_ifd(0x8825)[1] == "N", ext
            assert not exif.get_ifd(ExifTags.IFD.IFD1), ext
        back = read_image(out)
        assert back.size == (4 * W, 4 * H)
        text = back.metadata.xmp.decode()
        assert 'tiff:Orientation="1"' in text and f'exif:PixelXDimension="{4 * W}"' in text, ext
        assert f'exif:PixelYDimension="{4 * H}"' in text and "<dc:title>Lake</dc:title>" in text, ext


@pytest.mark.parametrize("profile", ["sRGB", "LAB"])
def test_icc_profile_kept(tmp_path, profile):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile(profile)).tobytes()
    for depth, ext in [(8, ".jpg"), (8, ".png"), (16, ".png"), (16, ".tif"), (8, ".webp")]:
        path = tmp_path / f"icc{depth}{ext}"
        write_image(photo(bit_depth=depth, metadata=PhotoMetadata(icc_profile=icc)), path)
        assert read_image(path).metadata.icc_profile == icc, (depth, ext)
        assert Image.open(path).info.get("icc_profile") == icc, (depth, ext)


def test_jpeg_quality_default_95_and_configurable(tmp_path):
    source = photo()
    write_image(source, tmp_path / "default.jpg")
    write_image(source, tmp_path / "q70.jpg", quality=70)
    reference = io.BytesIO()
    Image.open(tmp_path / "default.jpg").save(reference, "JPEG", quality=95)
    assert Image.open(tmp_path / "default.jpg").quantization == Image.open(reference).quantization
    assert Image.open(tmp_path / "q70.jpg").quantization != Image.open(reference).quantization
    with pytest.raises(Exception, match="quality"):
        write_image(source, tmp_path / "bad.jpg", quality=0)


def test_a_write_failing_midway_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import cmosx.io.atomic as atomic

    target = tmp_path / "out.png"
    target.write_bytes(b"previous complete output")
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, handle):
            self.file = real_fdopen(handle, "wb")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fdopen", lambda handle, mode: HalfWriter(handle))
    with pytest.raises(OutputError, match="out.png.*No space left"):
        write_image(photo(), target)
    assert target.read_bytes() == b"previous complete output"
    assert os.listdir(tmp_path) == ["out.png"]


def test_unknown_output_extension_is_a_usage_error(tmp_path):
    with pytest.raises(Exception, match="cannot write '.gif'"):
        write_image(photo(), tmp_path / "x.gif")


def test_a_killed_writer_leaves_no_partial_output(tmp_path):
    script = (
        "import os, sys, time\n"
        "import cmosx.io.atomic as atomic\n"
        "atomic.os.fsync = lambda fd: time.sleep(60)\n"
        "atomic.atomic_write_bytes(sys.argv[1], b'x' * 100000)\n"
    )
    target = tmp_path / "out.tif"
    child = subprocess.Popen([sys.executable, "-c", script, str(target)])
    try:
        deadline = time.monotonic() + 30
        while not any(name.startswith(".cmosx-tmp-") for name in os.listdir(tmp_path)):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not target.exists()
    assert all(name.startswith(".cmosx-tmp-") for name in os.listdir(tmp_path))
