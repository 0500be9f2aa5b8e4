"""Up-front config validation: every problem named by its key, all at once, before anything is built."""
import glob
import math
import os

import pytest

from jaxclr import config as configlib
from jaxclr import train
from jaxclr.trainer import validate
from tests.config.validation_cases import assert_one, split, tiny
from tests.helpers import REPO_ROOT

CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.py")))
PRESETS = ("tiny", "digits", "study", "s16", "b16", "l14")


# ------------------------------------------------------------------ valid configs

@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_file_and_preset_is_valid_on_8_devices(path, preset):
    config = configlib.load(f"{path}:{preset}")
    assert validate.problems(config, 8) == []
    assert validate.problems(config, 8, training=False) == []


def test_defaults_to_the_jobs_devices_and_check_passes():
    config = tiny()
    assert validate.problems(config) == []   # conftest: 8 CPU devices
    assert validate.check(config) is None


# ------------------------------------------------------------------ positive counts

@pytest.mark.parametrize("key", ["train.total_steps", "train.batch_size", "train.log_every", "checkpoint.every",
                                 "checkpoint.keep", "eval.batch_size", "train.micro_batches", "train.max_skips",
                                 "loss.block_size", "model.embed_dim", "model.image.depth", "model.text.depth",
                                 "data.eval_examples", "data.num_train", "data.num_test"])
def test_counts_must_be_positive(key):
    assert_one(tiny(**{key.replace(".", "__"): 0}), key, "0 must be >= 1")


@pytest.mark.parametrize("key", ["eval.every", "train.stop_at", "optim.warmup_steps", "data.worker_count",
                                 "data.prefetch", "train.micro_unroll"])
def test_counts_must_not_be_negative(key):
    assert_one(tiny(**{key.replace(".", "__"): -1}), key, "-1 must be >= 0")


def test_total_steps_names_what_to_set():
    assert_one(tiny(train__total_steps=0), "train.total_steps", "must be >= 1", "number of optimiser steps")


# ------------------------------------------------------------------ mesh and batch

def test_batch_not_divisible_by_data_parallel_devices():
    message = assert_one(tiny(train__batch_size=100), "train.batch_size")
    assert message == ("100 is not divisible by the 8 data-parallel devices (mesh data=8 x fsdp=1); "
                       "use a multiple of 8, e.g. 96 or 104")


def test_data_parallel_devices_count_fsdp_but_not_model():
    assert_one(tiny(train__batch_size=38, mesh__fsdp=2, mesh__model=2), "train.batch_size",
               "the 4 data-parallel devices (mesh data=2 x fsdp=2)", "e.g. 36 or 40")
    assert validate.problems(tiny(train__batch_size=36, mesh__model=2), 8) == []   # 36 on data=4 x fsdp=1: ok


def test_mesh_product_must_match_the_device_count():
    assert_one(tiny(mesh__data=4), "mesh", "data=4 x fsdp=1 x model=1 uses 4 devices but there are 8",
               "set one axis to -1")


def test_mesh_fixed_axes_must_divide_the_devices():
    assert_one(tiny(mesh__fsdp=3), "mesh", "does not divide the 8 devices")


def test_mesh_at_most_one_auto_axis():
    assert_one(tiny(mesh__fsdp=-1), "mesh.data, mesh.fsdp", "2 axes are -1", "at most one axis to -1")


@pytest.mark.parametrize("size", [0, -2])
def test_mesh_axis_sizes_must_be_positive(size):
    assert_one(tiny(mesh__model=size), "mesh.model", f"{size} is not an axis size", "positive number of devices")


def test_mesh_is_checked_against_the_given_device_count():
    assert validate.problems(tiny(), 4) == []
    assert_one(tiny(train__batch_size=64), "train.batch_size", "the 3 data-parallel", num_devices=3)


def test_micro_batches_must_divide_the_per_device_batch():
    assert_one(tiny(train__micro_batches=3), "train.micro_batches",
               "3 does not divide the per-device batch 8 (train.batch_size 64 / 8", "e.g. 1, 2 or 4")
    assert validate.problems(tiny(train__micro_batches=8), 8) == []


def test_batch_must_split_over_processes():
    assert_one(tiny(train__batch_size=64, mesh__data=1, mesh__model=-1), "train.batch_size", "the 3 processes",
               num_devices=9, num_processes=3)


def test_tokenizer_keys(tmp_path):
    assert_one(tiny(data__tokenizer="sentencepeice"), "data.tokenizer", "unknown tokenizer", "'sentencepiece'")
    assert_one(tiny(data__tokenizer_model="x.model"), "data.tokenizer_model", "is set but data.tokenizer is 'bytes'")
    missing = str(tmp_path / "sp.model")
    assert_one(tiny(data__tokenizer="sentencepiece", data__tokenizer_model=missing), "data.tokenizer_model",
               f"no SentencePiece model at {missing}", "python -m jaxclr.data.train_tokenizer")
    default = str(tmp_path / "jaxclr_shapes" / "tokenizer" / "sentencepiece.model")
    assert_one(tiny(data__tokenizer="sentencepiece", data__data_dir=str(tmp_path)), "data.tokenizer_model",
               f"no SentencePiece model at {default}")
    assert_one(tiny(False, data__lowercase="yes"), "data.lowercase", "is not True or False")


def test_init_from_must_be_a_path():
    assert_one(tiny(type_safe=False, train__init_from=3), "train.init_from", "3 is not a path", "RUN/checkpoints")
    # Whether it names a checkpoint is checked by the trainer on a fresh start only (tests/test_finetune.py).
    assert validate.problems(tiny(train__init_from="/no/such/run"), 8) == []


# ------------------------------------------------------------------ data

def test_max_len_needs_room_for_bos_and_eos():
    assert_one(tiny(data__max_len=1), "data.max_len", "must be >= 2", "BOS and EOS")


def test_text_max_len_must_equal_data_max_len():
    assert_one(tiny(type_safe=False, model__text__max_len=96), "model.text.max_len",
               "96 differs from data.max_len 80", "same value")


def test_embedded_dataset_limits_are_checked_without_building(tmp_path):
    config = tiny(data__image_size=16, data__data_dir=str(tmp_path))
    assert_one(config, "data.image_size", "jaxclr_shapes needs image_size >= 32")
    assert os.listdir(tmp_path) == []


def test_unknown_dataset(tmp_path):
    assert_one(tiny(data__name="no_such_dataset", data__data_dir=str(tmp_path)), "data.name",
               "Unknown dataset 'no_such_dataset'", "jaxclr_shapes")
    assert os.listdir(tmp_path) == []


def test_tfds_dataset_must_be_prepared_in_the_data_dir(tmp_path):
    assert_one(tiny(data__name="mnist", data__data_dir=str(tmp_path)), "data.name",
               f"'mnist' is not prepared in {tmp_path}", "tfds build mnist")
    assert os.listdir(tmp_path) == []   # looked up only: nothing built or downloaded


@pytest.mark.parametrize("key", ["image_feature", "caption_feature", "label_feature"])
def test_feature_names_must_be_names(key):
    assert_one(tiny(type_safe=False, **{f"data__{key}": ""}), f"data.{key}", "'' is not a feature name")
    assert_one(tiny(type_safe=False, **{f"data__{key}": 3}), f"data.{key}", "3 is not a feature name")


# ------------------------------------------------------------------ loss

def test_unknown_loss_impl():
    assert_one(tiny(loss__impl="gathr"), "loss.impl", "did you mean 'gather'?", "'gather', 'streamed'")


def test_unknown_loss_precision():
    assert_one(tiny(loss__precision="max"), "loss.precision", "'default', 'high', 'highest'")


def test_unknown_loss_term():
    config = tiny()
    config.loss.terms.clipp = 1.0
    assert_one(config, "loss.terms.clipp", "unknown loss term (did you mean 'clip'?)", "cross_uniformity")


def test_some_loss_term_must_be_on():
    assert_one(tiny(loss__terms__clip=0.0), "loss.terms", "every term has weight 0", "loss.terms.clip=1.0")


@pytest.mark.parametrize("key, value, phrase", [("loss.mix_beta", 0.0, "must be > 0"),
                                                ("loss.mix_scale", -1.0, "must be >= 0"),
                                                ("loss.uniformity_t", 0.0, "must be > 0"),
                                                ("loss.alignment_alpha", 0.0, "must be > 0")])
def test_loss_numbers(key, value, phrase):
    assert_one(tiny(**{key.replace(".", "__"): value}), key, phrase)


# ------------------------------------------------------------------ optimiser

@pytest.mark.parametrize("key, value, phrase", [("optim.lr", 0.0, "must be > 0"),
                                                ("optim.weight_decay", -0.1, "must be >= 0"),
                                                ("optim.b1", 1.0, "must be in [0, 1)"),
                                                ("optim.b2", -0.1, "must be in [0, 1)"),
                                                ("optim.eps", 0.0, "must be > 0"),
                                                ("optim.min_lr_ratio", 1.5, "must be in [0, 1]"),
                                                ("optim.grad_clip", 0.0, "must be > 0")])
def test_optimiser_numbers(key, value, phrase):
    assert_one(tiny(**{key.replace(".", "__"): value}), key, phrase)


def test_non_finite_and_non_numbers():
    assert_one(tiny(optim__lr=math.nan), "optim.lr", "nan is not a finite number")
    assert_one(tiny(type_safe=False, train__total_steps="500"), "train.total_steps", "'500' is not an integer")
    assert_one(tiny(type_safe=False, train__batch_size=64.0), "train.batch_size", "64.0 is not an integer")


# ------------------------------------------------------------------ train and eval

def test_unknown_nonfinite_policy():
    assert_one(tiny(train__on_nonfinite="ignore"), "train.on_nonfinite", "'ignore'", "'skip', 'stop'")


def test_unknown_evaluator():
    assert_one(tiny(eval__evaluators=("zeroshot", "retreival")), "eval.evaluators",
               "unknown evaluator 'retreival' (did you mean 'retrieval'?)",
               "'geometry', 'linear_probe', 'retrieval', 'zeroshot'")
    assert_one(tiny(type_safe=False, eval__evaluators="zeroshot"), "eval.evaluators", "is not a tuple")


@pytest.mark.parametrize("ks", [(0, 5), (), (1.5,)])
def test_recall_ks_are_positive_integers(ks):
    assert_one(tiny(type_safe=False, eval__recall_ks=ks), "eval.recall_ks", "positive integers")


def test_geometry_max_points():
    assert_one(tiny(eval__geometry_max_points=1), "eval.geometry_max_points", "must be >= 2")
    assert validate.problems(tiny(type_safe=False, eval__geometry_max_points=None), 8) == []


def test_linear_probe_keys():
    assert_one(tiny(eval__probe_examples=1), "eval.probe_examples", "1 must be >= 2")
    assert_one(tiny(eval__probe_c=0.0), "eval.probe_c", "must be > 0")
    assert validate.problems(tiny(eval__evaluators=("linear_probe",), eval__probe_examples=2, eval__probe_c=1e-3),
                             8) == []


def test_missing_key_is_named():
    config = tiny(type_safe=False)
    del config.train["log_every"]
    assert_one(config, "train.log_every", "missing from the config")


def test_evaluation_skips_training_keys():
    config = tiny(train__total_steps=0, train__batch_size=100, optim__lr=0.0, loss__impl="x", checkpoint__keep=0)
    assert validate.problems(config, 8, training=False) == []
    assert_one(tiny(eval__batch_size=0), "eval.batch_size", "must be >= 1", training=False)


# ------------------------------------------------------------------ all at once

def test_every_problem_is_reported_together():
    config = tiny(train__total_steps=0, train__batch_size=100, data__image_size=60, model__image__heads=5,
                  loss__impl="gathr", optim__b2=1.0, eval__evaluators=("zeroshoot",), model__dtype="fp16")
    keys = [split(p)[0] for p in validate.problems(config, 8)]
    assert sorted(keys) == sorted(["train.total_steps", "train.batch_size", "data.image_size", "model.image.heads",
                                   "loss.impl", "optim.b2", "eval.evaluators", "model.dtype"])
    with pytest.raises(validate.ConfigError) as err:
        validate.check(config, 8)
    assert isinstance(err.value, ValueError) and len(err.value.problems) == len(keys)
    assert str(err.value).splitlines() == err.value.problems
    config.mesh.fsdp = -1   # the batch split is unknown with a bad mesh: the mesh is reported instead
    keys = {split(p)[0] for p in validate.problems(config, 8)}
    assert "mesh.data, mesh.fsdp" in keys and "train.batch_size" not in keys and "train.total_steps" in keys


def test_checking_is_no_read_of_a_key():
    """tests/test_config_reads.py finds keys no code reads; the checks must not count as reads."""
    from tests.config.test_config_reads import recording

    config, read = tiny(), set()
    with recording(config, read):
        assert validate.problems(config, 8) == []
    assert read == set()


def test_train_library_call_raises_before_writing_anything(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "data"
    data_dir.mkdir()
    config = tiny(train__total_steps=0, data__data_dir=str(data_dir))
    with pytest.raises(validate.ConfigError, match=r"^train.total_steps: 0 must be >= 1"):
        train.train(config, str(workdir))
    assert not workdir.exists() and os.listdir(data_dir) == []


@pytest.mark.parametrize("window, phrase", [((5, 2), "1 <= start <= stop"), ((0, 1), "1 <= start"),
                                            ((1, 2, 3), "(start, stop)"), ((5000, 5001), "starts after")])
def test_profile_window_must_be_an_ordered_pair_inside_the_run(window, phrase):
    assert_one(tiny(type_safe=False, train__profile_steps=window), "train.profile_steps", phrase)


def test_wandb_switch_must_be_a_bool_and_needs_a_project():
    assert_one(tiny(type_safe=False, log__wandb="yes"), "log.wandb", "True or False")
    assert_one(tiny(log__wandb=True, log__wandb_project=""), "log.wandb_project", "name the W&B project")
    assert validate.problems(tiny(log__wandb=False, log__wandb_project=""), 8) == []


def test_zeroshot_datasets_must_be_prepared_labelled_datasets(tmp_path):
    assert_one(tiny(type_safe=False, eval__zeroshot_datasets="cifar10"), "eval.zeroshot_datasets",
               "is not a tuple of dataset names")
    message = assert_one(tiny(data__data_dir="/nonexistent/tfds", eval__zeroshot_datasets=("cifar10",)),
                         "eval.zeroshot_datasets", "'cifar10'", "not prepared in /nonexistent/tfds")
    assert "\n" not in message
    empty = str(tmp_path)   # embedded datasets are valid entries, and checking them builds nothing
    assert_one(tiny(data__data_dir=empty, eval__zeroshot_datasets=("jaxclr_digits:dev",)),
               "eval.zeroshot_datasets", "'dev' is not a split of jaxclr_digits")
    assert validate.problems(tiny(data__data_dir=empty, eval__zeroshot_datasets=("jaxclr_digits:validation",)), 8) == []
    assert validate.problems(tiny(data__data_dir=empty, eval__zeroshot_datasets=("jaxclr_digits",)), 8) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [-1, 40_000])
def test_malloc_mmap_threshold_must_be_in_glibcs_range(value):
    assert_one(tiny(train__malloc_mmap_threshold_kib=value), "train.malloc_mmap_threshold_kib", str(value))
