"""DDP with two gloo processes on the CPU: both ranks end with identical parameters."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    from cmosx.train import distributed
    from cmosx.train.config import make_config
    from cmosx.train.trainer import train

    cfg = make_config("sr", spec="tiny", steps=3, batch_size=2, crop=32, warmup_steps=1, lr=3e-3, seed=5)
    from test_train_loop import CLASSES, FakeBSR

    result = train(
        cfg, os.path.join(out_dir, "run"), dataset=FakeBSR(), num_classes=3, class_names=CLASSES, sigma_max=5.0
    )
    state = {k: v.detach().clone().contiguous() for k, v in result.stage.state_dict().items()}
    save_file(state, os.path.join(out_dir, f"rank{rank}.safetensors"))
    distributed.shutdown(distributed.init_from_env("cpu"))


@pytest.mark.slow
def test_two_gloo_ranks_end_with_equal_parameters(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # training moved the weights away from the shared initialisation
    torch.manual_seed(5)
    from cmosx.models.specs import get_spec
    from cmosx.train.runs import build_sr

    init = build_sr(get_spec("tiny"), 3).state_dict()
    assert any(not torch.equal(init[k], a["sr." + k]) for k in init)
