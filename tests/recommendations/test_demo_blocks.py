"""The demo shop's recommendation blocks: valid, saved once, never overwriting a shop's own block."""

from __future__ import annotations

from opencdp.recommendations import blocks
from opencdp.storage.base import Backend


def test_demo_blocks_are_saved_once_and_leave_existing_ones(backend: Backend) -> None:
    own = blocks.Block.parse({"id": "bestsellers", "name": "Our picks", "algorithm": "most_bought", "size": 3})
    blocks.save(backend, own)
    added = blocks.seed_demo_blocks(backend)
    assert "bestsellers" not in added and {"for_you", "similar", "bought_together"} <= set(added)
    assert blocks.seed_demo_blocks(backend) == []
    saved = {b.block_id: b for b in blocks.list_blocks(backend)}
    assert set(saved) == {raw["id"] for raw in blocks.DEMO_BLOCKS}
    assert (saved["bestsellers"].name, saved["bestsellers"].algorithm) == ("Our picks", "most_bought")
    assert saved["for_you"].algorithm == "personal"
