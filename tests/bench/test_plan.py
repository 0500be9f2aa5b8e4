"""The plan's and the throughput kit's parts that need no TPU: FLOP and collective counts, the batch
search, topology names, the libtpu environment; and throughput on this CPU."""
import jax
import jax.numpy as jnp
import pytest

from jaxclr.bench import chips, hlo_stats, plan, throughput, tpu_env
from tests.bench.test_step_memory import small_bench_config


def test_jaxpr_flops_equal_xlas_for_a_matmul_and_count_a_scan_body_per_iteration():
    a = jax.ShapeDtypeStruct((64, 48), jnp.float32)
    b = jax.ShapeDtypeStruct((48, 32), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y)
    assert hlo_stats.step_flops(matmul, a, b) == 2 * 64 * 48 * 32 == matmul.lower(a, b).compile().cost_analysis()[
        "flops"]

    def looped(x, y):
        return jax.lax.scan(lambda c, _: (c, c @ y), x, None, length=5)[1]

    looped = jax.jit(looped)
    assert hlo_stats.step_flops(looped, a, b) == 5 * 2 * 64 * 48 * 32
    assert looped.lower(a, b).compile().cost_analysis()["flops"] < 2 * 2 * 64 * 48 * 32   # XLA: the body once


HLO = """
HloModule m

%cond (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %n = s32[] constant(6)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %cp = f32[8]{0} collective-permute(%x), source_target_pairs={{0,1},{1,0}}
  ROOT %t = (s32[], f32[8]) tuple(%i, %cp)
}

ENTRY %main (a: f32[1024], b: (s32[], f32[8])) -> f32[1024] {
  %a = f32[1024]{0} parameter(0)
  %b = (s32[], f32[8]) parameter(1)
  %ar = f32[1024]{0} all-reduce(%a), replica_groups={}, to_apply=%add
  %w = (s32[], f32[8]) while(%b), condition=%cond, body=%body
  ROOT %ag = bf16[2048]{0} all-gather-start(%a), dimensions={0}
}
"""


def test_collective_bytes_count_operands_times_the_loop_trip_count():
    assert hlo_stats.collectives(HLO) == {"all-reduce": 4096, "all-gather": 4096, "collective-permute": 6 * 32,
                                          "unknown_loops": 0}
    unknown = HLO.replace("%n = s32[] constant(6)", "%n = s32[] parameter(1)")
    assert hlo_stats.collectives(unknown)["collective-permute"] == 32
    assert hlo_stats.collectives(unknown)["unknown_loops"] == 1


def test_find_max_batch_returns_the_largest_multiple_that_fits(monkeypatch):
    probed = []

    def fake_fits(config, topology, batch):
        probed.append(batch)
        return batch <= 200

    monkeypatch.setattr(plan, "fits", fake_fits)
    assert plan.find_max_batch(None, plan.Topology("v5e:2x2"), start=8, report=lambda line: None) == 200
    assert probed[:6] == [8, 16, 32, 64, 128, 256] and len(probed) <= 12
    monkeypatch.setattr(plan, "fits", lambda *a: False)
    assert plan.find_max_batch(None, plan.Topology("v5e:2x2"), start=8, report=lambda line: None) == 0


def test_topologies_chips_and_accelerator_types():
    assert plan.Topology("v5e:16x16").chips == 256 and plan.Topology("v4:2x2x2", num_slices=2).chips == 16
    assert plan.Topology("v5e:4x4").chip.hbm_bytes == 16 * chips.GiB
    with pytest.raises(ValueError, match="unknown TPU generation"):
        plan.Topology("v9:2x2").chip  # noqa: B018
    with pytest.raises(ValueError, match="GENERATION:AxB"):
        plan.Topology("v5e").chips  # noqa: B018
    assert tpu_env.accelerator_type("v5e", 16) == "v5litepod-16"
    assert tpu_env.accelerator_type("v4", 8) == "v4-16" and tpu_env.accelerator_type("v6e", 4) == "v6e-4"
    env = tpu_env.environment("/x/libtpu.so", "v5e", 4)
    assert env["TPU_SKIP_MDS_QUERY"] == "1" and env["TPU_WORKER_HOSTNAMES"] == "localhost"
    assert tpu_env.requirement().startswith("libtpu")


def test_peak_flops_by_device_kind():
    assert chips.chip_of_device_kind("NVIDIA H100 80GB HBM3").peak_bf16_flops == 989e12
    assert chips.chip_of_device_kind("NVIDIA H100 PCIe").peak_bf16_flops == 756e12
    assert chips.chip_of_device_kind("NVIDIA A100-SXM4-80GB").name == "A100"
    assert chips.chip_of_device_kind("TPU v5 lite").name == "v5e" and chips.chip_of_device_kind("TPU v5").name == "v5p"
    assert chips.chip_of_device_kind("cpu") is None


def test_throughput_on_the_cpu_reports_mfu_against_a_measured_peak(monkeypatch):
    monkeypatch.setattr(throughput, "MATMUL_SIZE", 512)
    config = small_bench_config("none", per_device_batch=4)
    config.mesh.fsdp, config.model.scan_layers = 1, False
    r = throughput.measure(config, per_device_batch=4, steps=2, warmup=1)
    assert r["devices"] == jax.device_count() and r["step_s"] > 0
    assert r["examples_per_s_per_device"] == pytest.approx(4 / r["step_s"])
    assert r["peak_source"].startswith("measured") and r["peak"] > 1e8
    assert 0 < r["mfu_xla"] and 0 < r["mfu_jaxpr"]
    assert r["jaxpr_flops"] == pytest.approx(r["xla_flops"], rel=0.5)   # unscanned, no GradCache: close counts
    assert "MFU" in "\n".join(throughput.report_lines("tiny", r))


def test_xla_tpus_out_of_memory_error_becomes_does_not_fit():
    message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
               "(51.93G) exceeds available HBM (15.75G).\nmore lines")   # what libtpu 0.0.42.1 raised
    error = plan._over_hbm(RuntimeError(message))
    assert isinstance(error, plan.DoesNotFit) and "51.93G" in str(error) and "more lines" not in str(error)
    assert plan._over_hbm(RuntimeError("INVALID_ARGUMENT: something else")) is None
