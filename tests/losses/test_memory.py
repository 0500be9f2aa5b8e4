"""Streamed loss memory is linear in the global batch (compile only, XLA memory analysis)."""
from jaxclr.bench.loss_memory import compiled_temp_bytes


def test_streamed_temp_memory_grows_linearly_and_beats_gather():
    small = compiled_temp_bytes(65_536, impl="streamed")
    large = compiled_temp_bytes(262_144, impl="streamed")
    assert large / small <= 4.6, (small, large)          # 4x batch -> at most ~4x memory
    assert large <= 512 * 2**20, large                    # the bound at B = 262,144, 8 devices
    gather = compiled_temp_bytes(65_536, impl="gather")
    assert gather / small > 30, (gather, small)           # gather is O(local x global)
