"""Where this process sits in a ``torchrun`` launch: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, read in one place.

No torch here: the CLI reads it before deciding anything that needs torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cmosx.errors import UsageError


@dataclass(frozen=True)
class Launch:
    """This process: ``rank`` of ``world_size``; ``local_rank`` on its machine (None when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared files and talks to the user."""
        return self.rank == 0


def launch_from_environment() -> Launch:
    """The :class:`Launch` ``torchrun`` described in the environment; ``Launch()`` when not launched by it.

    ``RANK``/``WORLD_SIZE`` win; a launcher that sets only ``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` (one machine)
    gives those. A value that is not an integer, or a rank outside the world, is a :class:`UsageError`.
    """
    local_rank = _read_int("LOCAL_RANK")
    rank, world = _read_int("RANK"), _read_int("WORLD_SIZE")
    if rank is None or world is None:
        rank, world = local_rank, _read_int("LOCAL_WORLD_SIZE")
    if rank is None or world is None:
        return Launch(local_rank=local_rank)
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"invalid rank {rank} for world size {world}")
    return Launch(rank=rank, world_size=world, local_rank=local_rank)


def _read_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer") from None
