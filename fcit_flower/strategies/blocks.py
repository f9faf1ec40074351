"""Server side of O-LoRA and M-LoRA: one LoRA block per stage.

The server keeps every block trained so far (``block{k}/`` keys), sends them all,
opens the stage's block with fresh factors the first time the stage runs, and
averages only that block (with its own server-optimizer state) and, when it is
trained, the projector. The client side is :mod:`fcit_flower.methods.lora_blocks`.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.serverapp import Grid

from fcit_flower.protocol import (
    BLOCK,
    PROJECTOR,
    Arrays,
    block_arrays,
    block_prefix,
    split_projector,
)
from fcit_flower.strategies.continual import ContinualFedAvg, Federation
from fcit_flower.strategies.uploads import Upload


class BlockLora(ContinualFedAvg):
    """One LoRA block per stage; only the current block is trained and averaged.

    Parameters
    ----------
    federation : Federation
        As :class:`ContinualFedAvg`; every block and the projector get their own
        server optimizer.
    init_block : callable
        ``init_block(k)`` -> fresh factors of block ``k`` (keys without prefix).
    """

    def __init__(
        self,
        *,
        federation: Federation,
        init_block: Callable[[int], Arrays],
    ) -> None:
        super().__init__(federation=federation)
        self.init_block = init_block

    def admit(
        self, picked: list[tuple[int, int]], server_round: int, grid: Grid
    ) -> list[tuple[int, int]]:
        """Open the stage's block (fresh factors) the first time the stage runs."""
        if not block_arrays(self.current, self._stage):
            prefix = block_prefix(self._stage)
            for key, value in self.init_block(self._stage).items():
                self.current[prefix + key] = value
        return picked

    def instructions(self, position: int) -> dict[str, int | bool]:
        """Name the block to train."""
        return {BLOCK: self._stage}

    def expected_upload(self, position: int) -> Arrays:
        """The current block (and the projector when it travels)."""
        prefix = block_prefix(self._stage)
        return {
            k: v
            for k, v in self.current.items()
            if k.startswith(prefix) or PROJECTOR in k
        }

    def apply_uploads(self, uploads: list[Upload]) -> None:
        """Average the current block (own optimizer state) and the projector."""
        prefix = block_prefix(self._stage)
        averaged = self.average(
            f"block{self._stage}",
            [u.arrays for u in uploads],
            [u.weight for u in uploads],
        )
        block = {k: v for k, v in averaged.items() if k.startswith(prefix)}
        current = {k: self.current[k] for k in block}
        self.current.update(
            self.optimizers.step(
                f"block{self._stage}", current, block, stage=self._stage
            )
        )
        _, projector = split_projector(averaged)
        if projector:
            now = {k: self.current[k] for k in projector}
            self.current.update(
                self.optimizers.step("projector", now, projector, stage=self._stage)
            )
