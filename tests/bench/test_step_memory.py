"""jaxclr.bench.step_memory: compiled per-device memory of the real train step (compile only)."""
import pytest

from jaxclr.bench import step_memory


def small_bench_config(remat, per_device_batch=32):
    """The tiny preset on 2 devices, made smaller still so that a compile takes seconds."""
    config = step_memory.bench_config("configs/clip.py:tiny", devices=2, fsdp=2, per_device_batch=per_device_batch,
                                      remat=remat, scan=True)
    config.data.image_size = 32
    config.model.image.stem = ()
    config.model.image.patch_size = 8
    return config


def test_main_reports_positive_per_device_sizes(capsys):
    result = step_memory.main(["--config=configs/clip.py:tiny", "--devices", "2", "--fsdp", "2",
                               "--per-device-batch", "4", "--scan", "--remat", "block"])
    assert result["temp"] > 0 and result["argument"] > 0 and result["output"] > 0
    printed = capsys.readouterr().out
    assert "XLA:CPU estimate" in printed and "temp" in printed and "remat 'block'" in printed


@pytest.mark.slow
def test_block_remat_needs_less_temp_memory_than_none():
    none = step_memory.step_memory(small_bench_config("none"), devices=2)
    block = step_memory.step_memory(small_bench_config("block"), devices=2)
    assert block["argument"] == none["argument"]          # same params and optimiser state
    assert block["temp"] < 0.8 * none["temp"], (block, none)


def test_unknown_remat_is_an_error():
    with pytest.raises(ValueError, match="model.remat must be one of"):
        step_memory.bench_config("configs/clip.py:tiny", devices=2, fsdp=2, per_device_batch=4, remat="all")
