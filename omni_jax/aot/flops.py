"""Matmul FLOPs of a traced step, loops included: a walk over its jaxpr.

XLA's `cost_analysis()` counts the body of a while loop once, so a 28-layer `lax.scan` (and the
decode loop) would be under-counted 28× (1024×). Here every `dot_general` and convolution is
counted with the trip counts of the loops around it: a scan's `length`, a while loop's
`while_trips` (the decode loop's worst case: every row runs to max_new_tokens), and the most
expensive branch of a `cond` (an upper bound: the vision encoder picks window or full attention
per block). The result is the whole program's FLOPs over all chips; elementwise work is ignored.
"""

from __future__ import annotations

import math

from jax.extend import core


def _sub_jaxprs(value):
    if isinstance(value, core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def _dot_flops(eqn) -> float:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    return 2.0 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _conv_flops(eqn) -> float:
    rhs = eqn.invars[1].aval.shape  # kernel: spatial dims × in features/groups × out features
    out = eqn.outvars[0].aval.shape
    dn = eqn.params["dimension_numbers"]
    out_features = rhs[dn.rhs_spec[0]]
    return 2.0 * math.prod(out) * math.prod(rhs) / out_features


def jaxpr_flops(jaxpr, *, while_trips: int = 1) -> float:
    """FLOPs of `jaxpr` (a Jaxpr or ClosedJaxpr); while loops count `while_trips` times."""
    if isinstance(jaxpr, core.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":
            total += max(jaxpr_flops(b, while_trips=while_trips) for b in eqn.params["branches"])
        elif name == "scan":
            total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"], while_trips=while_trips)
        elif name == "while":
            body = jaxpr_flops(eqn.params["body_jaxpr"], while_trips=while_trips)
            total += while_trips * body + (while_trips + 1) * jaxpr_flops(eqn.params["cond_jaxpr"])
        else:
            for value in eqn.params.values():
                for sub in _sub_jaxprs(value):
                    total += jaxpr_flops(sub, while_trips=while_trips)
    return total
