"""What both exporters need from a model before tracing it, checked first so that a model they cannot take
fails with one line naming the cause instead of a traceback from deep inside torch."""
from __future__ import annotations

import torch
from torch import nn


def check_float32(model: nn.Module | torch.export.ExportedProgram, what: str) -> None:
    """Exported weights are float32; a float64 or float16 model is refused with the fix."""
    if isinstance(model, torch.export.ExportedProgram):
        tensors = [*model.state_dict.values(), *model.constants.values()]
    else:
        tensors = [*model.parameters(), *model.buffers()]
    other = sorted({str(t.dtype).replace("torch.", "") for t in tensors
                    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float32})
    if other:
        raise ValueError(f"the model holds {'/'.join(other)} weights; {what} works in float32: call model.float() "
                         "first")


def single_output(out, what: str) -> torch.Tensor:
    """The model's output when it is one tensor; a tuple, list or dict is refused with the fix."""
    if isinstance(out, torch.Tensor):
        return out
    count = f" of {len(out)}" if isinstance(out, (tuple, list, dict)) else ""
    raise ValueError(f"the model returns a {type(out).__name__}{count}; {what} needs a model with one tensor output "
                     "(return that tensor itself)")
