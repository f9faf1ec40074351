"""Zero-shot: the base model untrained, the FCIT paper's lower reference.

It is evaluated after every stage like a continual method, with Finetune's fresh
adapter (``lora_B = 0``: exactly the base), and never trains.
"""

from __future__ import annotations

from fcit_flower.methods.finetune import Finetune
from fcit_flower.methods.registry import register


class ZeroShot(Finetune):
    """The base, evaluated as is."""

    name = "zeroshot"
    trains = False


register(ZeroShot())
