"""Resource blocks: a block type is a fixed vector of resources with a cost.

A shard's slice of a service is a whole number of blocks of one or more types; what it amounts
to is the sum of their vectors.

>>> small = BlockType(name="small", cpu_millicores=250, memory_mib=256, io_weight=50,
...                   net_mbit=25, concurrency=4, cost=1.0)
>>> total_resources({"small": 3}, {"small": small})
Resources(cpu_millicores=750, memory_mib=768, io_weight=150, net_mbit=75.0, concurrency=12)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

BlockTypeName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class BlockType(BaseModel):
    """One kind of block: what a single block provides, and what it costs.

    ``cost`` is in any unit (per hour, credits) as long as every block type of a pool uses the
    same one; the optimiser only compares costs. ``concurrency`` is the number of request slots
    a block adds to its shard (the gateway sizes the shard's worker pool with it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: BlockTypeName
    cpu_millicores: int = Field(ge=0, le=1_000_000)
    memory_mib: int = Field(ge=0, le=10_000_000)
    io_weight: int = Field(0, ge=0, le=10_000)
    net_mbit: float = Field(0.0, ge=0, le=1_000_000)
    concurrency: int = Field(1, ge=1, le=100_000)
    cost: float = Field(gt=0, le=1e9)

    @property
    def cores(self) -> float:
        """CPU of one block in cores: the block's size used by the calibration prior."""
        return self.cpu_millicores / 1000.0


@dataclass(frozen=True, slots=True)
class Resources:
    """A sum of block vectors (or a share of one), in the units of :class:`BlockType`."""

    cpu_millicores: int = 0
    memory_mib: int = 0
    io_weight: int = 0
    net_mbit: float = 0.0
    concurrency: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millicores + other.cpu_millicores,
            self.memory_mib + other.memory_mib,
            self.io_weight + other.io_weight,
            self.net_mbit + other.net_mbit,
            self.concurrency + other.concurrency,
        )

    def split(self, parts: int) -> Resources:
        """One of ``parts`` equal shares, rounded down so the shares never exceed the whole.

        >>> Resources(1000, 512, 100, 30.0, 7).split(3)
        Resources(cpu_millicores=333, memory_mib=170, io_weight=33, net_mbit=10.0, concurrency=2)
        """
        if parts < 1:
            raise ValueError(f"cannot split resources into {parts} parts: need at least 1")
        return Resources(
            self.cpu_millicores // parts,
            self.memory_mib // parts,
            self.io_weight // parts,
            self.net_mbit / parts,
            self.concurrency // parts,
        )


def block_resources(block: BlockType, count: int = 1) -> Resources:
    """The resources of ``count`` blocks of one type."""
    return Resources(
        block.cpu_millicores * count,
        block.memory_mib * count,
        block.io_weight * count,
        block.net_mbit * count,
        block.concurrency * count,
    )


def total_resources(blocks: Mapping[str, int], block_types: Mapping[str, BlockType]) -> Resources:
    """Sum of the vectors of ``blocks`` (block type name -> count).

    Raises :class:`KeyError` naming the block type when it is not in ``block_types``.
    """
    total = Resources()
    for name, count in blocks.items():
        if name not in block_types:
            raise KeyError(f"unknown block type {name!r}; known: {', '.join(sorted(block_types))}")
        total = total + block_resources(block_types[name], count)
    return total
