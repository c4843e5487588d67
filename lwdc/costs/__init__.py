"""Cost models behind one interface; a new one is one file here plus one entry in ``COST_MODELS``.

A cost model is named by a spec string ``name[:option[:option...]]``; keyword arguments of
``get_cost_model`` set anything a spec cannot say (a cache folder, SRAM sizes):

    params, macs, flops             closed-form counts (flops is an alias of macs)
    latency[:eager|onnxruntime][:bN][:tN]
                                    measured ms at batch N on N threads (default eager, b1, t1), see latency.py
    systolic[:RxC][:ws|os][:risa]   compute cycles on an R x C systolic array (default 32x32, ws), see systolic.py
    flash[:int8|float32]            bytes of weights in the generated C library (default int8), see flash.py
    ram[:int8|float32][:inplace|plain]
                                    peak bytes of activations of its static memory plan (default int8, in
                                    place), see ram.py
    mcu[:cortex-m4|cortex-m7|cortex-m33][:int8|float32]
                                    instructions of the C export on the emulated core (default cortex-m4, int8),
                                    measured in QEMU and cached, see mcu.py; ``instructions`` is an alias
                                    (``--target instructions=2M``)
"""
from __future__ import annotations

from .analytic import MacsCost, ParamsCost
from .base import CostModel, CostTable, build_cost_table
from .flash import FlashCost
from .latency import LatencyCost
from .mcu import McuCost
from .ram import RamCost
from .systolic import SystolicCost

__all__ = ["CostModel", "CostTable", "build_cost_table", "get_cost_model", "COST_MODELS"]

COST_MODELS = {"params": ParamsCost, "macs": MacsCost, "flops": MacsCost, "latency": LatencyCost,
               "systolic": SystolicCost, "flash": FlashCost,
               "ram": RamCost, "mcu": McuCost, "instructions": McuCost}


def get_cost_model(spec: str, **options) -> CostModel:
    """The cost model a spec string names (``"macs"``, ``"latency:onnxruntime"``, ``"systolic:16x16:risa"``).

    Constructing one measures nothing: latency tables fill when branches are priced.
    """
    name, *args = spec.split(":")
    if name not in COST_MODELS:
        raise ValueError(f"unknown cost model {name!r}; choose one of {', '.join(COST_MODELS)} "
                         "(e.g. latency:onnxruntime, systolic:32x32:risa)")
    cls = COST_MODELS[name]
    if hasattr(cls, "from_spec"):
        return cls.from_spec(args, **options)
    if args or options:
        raise ValueError(f"cost model {name!r} takes no options; got {spec!r} {options or ''}".rstrip())
    return cls()
