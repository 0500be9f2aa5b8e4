"""FLOPs and collective bytes of a train step, counted so that loops count once per iteration.

XLA's `cost_analysis()` counts a while loop's body once, whatever its trip count: with
`model.scan_layers=True` (the s16/b16/l14 presets) the depth-12 towers are one loop and XLA
reports about a twelfth of the step's FLOPs. Two counts that do not have that blind spot:

- `jaxpr_flops`: the matmul and convolution FLOPs of the step's jaxpr (what jit traces, before
  partitioning): `scan` bodies times their length, `shard_map` bodies times the devices they run
  on, the larger branch of a `cond`; remat's recomputation is in the jaxpr and is counted.
  Elementwise work is not counted (matmuls are what the bf16 peak measures).
- `collectives`: the bytes each collective op of a compiled (partitioned, per-device) HLO module
  sends, times the trip count of the loops around it, read from the loop's condition (a counter
  compared with a constant: how `scan` and `fori_loop` compile); a loop whose count cannot be read
  counts once and is reported.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict

import jax

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "collective-permute", "all-to-all")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
          "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b(" + "|".join(_BYTES) + r")\[([0-9,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")
_CALLEE = re.compile(r"\b(?:body|condition|calls|to_apply|true_computation|false_computation)=%([\w.\-]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")


# ---- FLOPs from the jaxpr ----

def _dot_flops(eqn) -> float:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lhs_contract)


def _conv_flops(eqn) -> float:
    rhs = eqn.invars[1].aval.shape          # kernel: spatial x in-features x out-features (any order)
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / out_features


def _sub_jaxprs(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def jaxpr_flops(jaxpr) -> float:
    """Matmul + convolution FLOPs of a (Closed)Jaxpr, loops times their length (module docstring)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        subs = [f for v in eqn.params.values() for f in (jaxpr_flops(s) for s in _sub_jaxprs(v))]
        if not subs:
            continue
        if name == "cond":
            total += max(subs)
        elif name == "scan":
            total += eqn.params["length"] * sum(subs)
        elif name == "shard_map":
            total += eqn.params["mesh"].size * sum(subs)
        else:
            total += sum(subs)
    return total


def step_flops(jitted, *args) -> float:
    """Global FLOPs of one call of `jitted(*args)` (abstract args are fine), by `jaxpr_flops`."""
    return jaxpr_flops(jitted.trace(*args).jaxpr)


# ---- collectives from compiled HLO text ----

def _shape_bytes(shape: str) -> int:
    return sum(_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d) for dtype, dims in _ARRAY.findall(shape))


def _parse(hlo: str):
    """{computation: [(name, shape, opcode, rest of line)]}, the entry computation's name."""
    comps, entry, current = defaultdict(list), None, None
    for line in hlo.splitlines():
        head = _COMPUTATION.match(line)
        if head and line.rstrip().endswith("{"):
            current = head.group(1)
            entry = current if line.startswith("ENTRY") else entry
            continue
        m = _INSTR.match(line)
        if m and current:
            comps[current].append(m.groups())
    return comps, entry


def _trip_count(condition) -> int | None:
    """N of a loop condition `counter < N` (one integer constant and a compare LT), else None."""
    constants = [re.search(r"constant\((-?\d+)\)", f"{op}({rest}") for _, shape, op, rest in condition
                 if op == "constant" and re.match(r"[su](32|64)\[\]", shape)]
    compares = [rest for _, _, op, rest in condition if op == "compare" and "direction=LT" in rest]
    if len(constants) == 1 and constants[0] and len(compares) == 1:
        return int(constants[0].group(1))
    return None


def _multiplicities(comps, entry):
    """{computation: how many times one run of the entry runs it}, and the loops of unknown count."""
    calls = defaultdict(list)      # computation -> [(callee, times)]
    unknown = 0
    for comp, instrs in comps.items():
        for _, _, op, rest in instrs:
            callees = _CALLEE.findall(rest)
            for group in _BRANCHES.findall(rest):
                callees += [c.strip().lstrip("%") for c in group.split(",")]
            trips = 1
            if op == "while":
                cond = re.search(r"condition=%([\w.\-]+)", rest).group(1)
                count = _trip_count(comps.get(cond, []))
                unknown += count is None
                trips = count or 1
            for callee in dict.fromkeys(callees):
                calls[comp].append((callee, trips if op == "while" else 1))
    times = defaultdict(int)

    def visit(comp, n):
        times[comp] += n
        for callee, k in calls.get(comp, ()):
            visit(callee, n * k)

    visit(entry, 1)
    return times, unknown


def collectives(hlo: str) -> dict:
    """{'<op kind>': bytes sent per device per step, ..., 'unknown_loops': n} of a compiled module's text
    (`compiled.as_text()`): each collective's operand bytes times the runs of its computation."""
    comps, entry = _parse(hlo)
    shapes = {name: shape for instrs in comps.values() for name, shape, _, _ in instrs}
    times, unknown = _multiplicities(comps, entry)
    out = defaultdict(int)
    for comp, instrs in comps.items():
        for _, _, op, rest in instrs:
            kind = op.removesuffix("-start")
            if kind not in COLLECTIVES or not times.get(comp):
                continue
            operands = re.findall(r"%([\w.\-]+)", rest.split(")", 1)[0])
            out[kind] += times[comp] * sum(_shape_bytes(shapes.get(o, "")) for o in operands)
    return {**dict(out), "unknown_loops": unknown}
