"""A toy compression method, registered from this file alone: a random operator per layer (the baseline any
search must beat), drawn with the run's seed from LWDC's expanded layers, then derived."""
from __future__ import annotations

import torch

import lwdc
from lwdc.methods import MethodResult, register_method


@register_method("random-choice")
class RandomChoice:
    name = "random-choice"

    def apply(self, model, ctx):
        cfg = ctx.config
        supernet = lwdc.expand(model, ctx.example, cfg.ops, seed=cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed)
        choices = {name: layer.op_names[int(torch.randint(len(layer.op_names), (1,), generator=g))]
                   for name, layer in supernet.choice_layers().items()}
        supernet.set_choices(choices)
        ctx.log(f"random-choice: {len(choices)} layers drawn")
        return MethodResult(model=lwdc.derive(supernet), choices=choices, report={"drawn_with_seed": cfg.seed})
