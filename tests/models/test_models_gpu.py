"""Both networks on CUDA: fp32 agrees with the CPU, fp16 and bf16 autocast stay finite and close."""

import pytest
import torch

from cmosx.models.cmos import CMOS
from cmosx.models.random_init import probe_weights
from cmosx.models.rrdb_sft import RRDBSFT
from cmosx.models.specs import SPECS

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("spec_name", ["lite", "paper"])
def test_cuda_precisions(spec_name):
    spec = SPECS[spec_name]
    torch.manual_seed(0)
    cmos, sr = probe_weights(CMOS(spec.cmos, 19)), probe_weights(RRDBSFT(spec.sr, 19))
    lr = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        maps = cmos(lr)
        blur, sem = maps.blur_lr.clamp(0, 5), torch.softmax(maps.logits_lr, 1)
        cpu = sr(lr, blur, sem)
        cmos, sr = cmos.cuda().to(memory_format=torch.channels_last), sr.cuda().to(memory_format=torch.channels_last)
        x, b, s = (t.cuda().contiguous(memory_format=torch.channels_last) for t in (lr, blur, sem))
        ref = sr(x, b, s).float()
        ref_blur = cmos(x).blur_lr.float()
        torch.testing.assert_close(ref.cpu(), cpu, rtol=0, atol=2e-2)  # TF32 convolutions
        scale = ref.abs().max()
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast("cuda", dtype=dtype):
                low, low_blur = sr(x, b, s).float(), cmos(x).blur_lr.float()
            assert torch.isfinite(low).all() and torch.isfinite(low_blur).all(), dtype
            assert (low - ref).abs().max() < 0.05 * scale, dtype
            assert (low_blur - ref_blur).abs().max() < 0.05 * ref_blur.abs().max() + 0.05, dtype
