"""A saved config written before some keys existed loads with the values the code then used."""
import ml_collections
import pytest

from jaxclr import config as configlib
from jaxclr.config import saved
from tests.helpers import CONFIG_FILES


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_every_added_key_exists_in_every_config_file(path):
    """fill_missing only ever adds keys today's configs have (so a filled config validates)."""
    keys = set(configlib.flat_keys(configlib.load(path)))
    assert set(saved.ADDED_KEYS) <= keys


def test_fill_missing_adds_the_old_values_and_keeps_what_is_there():
    config = configlib.load("configs/clip.py:tiny")
    config.model.image.stem_impl = "matmul"
    old = ml_collections.ConfigDict(configlib.to_json(config))
    del old.model.image["stem_impl"], old.train["malloc_mmap_threshold_kib"], old.eval["recall_ks"]
    old.data.lowercase = True
    added = saved.fill_missing(old)
    assert sorted(added) == ["eval.recall_ks", "model.image.stem_impl", "train.malloc_mmap_threshold_kib"]
    # the values the code used before each key existed, not today's defaults ('auto', 128)
    assert (old.model.image.stem_impl, old.train.malloc_mmap_threshold_kib) == ("conv", 0)
    assert tuple(old.eval.recall_ks) == (1, 5, 10) and old.data.lowercase is True
    assert saved.fill_missing(old) == []   # a second fill adds nothing
