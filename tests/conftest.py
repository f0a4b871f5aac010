"""Test configuration: offline Hub, deterministic torch, one torch thread on request, the gpu marker."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("CMOSX_DEBUG", "0")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _empty_hub_cache(tmp_path_factory, monkeypatch):
    """No test sees the user's Hugging Face cache; tests that need one set HF_HUB_CACHE themselves."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "no-hub-cache"))


@pytest.fixture(scope="session")
def _session_memory_models() -> dict:
    """The memory models fitted in this test session (a property of machine and model, like the cache)."""
    return {}


@pytest.fixture(autouse=True)
def _private_probe_cache(tmp_path, monkeypatch, _session_memory_models):
    """No test reads or writes the user's probe cache (precisions, memory models): each test has its own,
    empty one. The in-process memory models are shared by the session's tests (each fit runs its probes
    three times in a row, about a second per model); tests of the probing set their own."""
    import cmosx.engine.device as device_mod
    import cmosx.engine.pipeline as pipeline_mod

    monkeypatch.setenv("CMOSX_PROBE_CACHE", str(tmp_path / "probe-cache.json"))
    monkeypatch.delenv("CMOSX_PRECISION_CACHE", raising=False)
    monkeypatch.setattr(device_mod, "_precision_cache", {})
    monkeypatch.setattr(pipeline_mod, "_memory_models", _session_memory_models)


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a whole test module (request it with ``pytestmark``).

    The tests run many small tensor ops on cores shared with other work: extra threads only spin (5-10x
    slower measured here). Module-scoped so module-scoped fixtures that build data run under it too.
    """
    from cmosx.train.data.bsr import one_torch_thread

    with one_torch_thread():
        yield


@pytest.fixture
def write_dng():
    """``write_dng(path, width, height)``: a small RGGB 16-bit DNG (camera "TestCam" / "T1") written with pidng."""

    def write(path, width, height):
        import numpy as np
        from pidng.core import RAW2DNG, DNGTags, Tag
        from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation

        tags = DNGTags()
        for tag, value in [
            (Tag.ImageWidth, width), (Tag.ImageLength, height), (Tag.TileWidth, width), (Tag.TileLength, height),
            (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
            (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16), (Tag.CFARepeatPatternDim, [2, 2]),
            (Tag.CFAPattern, CFAPattern.RGGB), (Tag.BlackLevel, 256), (Tag.WhiteLevel, 4095),
            (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
            (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65), (Tag.AsShotNeutral, [[1, 2], [1, 1], [1, 2]]),
            (Tag.Make, "TestCam"), (Tag.Model, "T1"),
            (Tag.DNGVersion, DNGVersion.V1_4), (Tag.DNGBackwardVersion, DNGVersion.V1_2),
        ]:  # fmt: skip
            tags.set(tag, value)
        writer = RAW2DNG()
        writer.options(tags, path=str(path.parent), compress=False)
        raw = np.random.default_rng(0).integers(500, 3500, size=(height, width)).astype(np.uint16)
        writer.convert(raw, filename=path.stem)

    return write


@pytest.fixture
def model_loads(monkeypatch):
    """The list of model references the CLI resolves during a test (``cmosx.cli._engine.resolve_model`` counted)."""
    import cmosx.cli._engine as engine_seam

    calls = []
    real_resolve = engine_seam.resolve_model

    def counting(ref):
        calls.append(ref)
        return real_resolve(ref)

    monkeypatch.setattr(engine_seam, "resolve_model", counting)
    return calls
