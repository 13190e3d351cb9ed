"""TorchScript tracing as the inference paths use it."""
import warnings

import torch


def frozen_trace(module: torch.nn.Module, example: tuple) -> torch.jit.ScriptModule:
    """``module`` in eval mode, traced on ``example`` and frozen (same outputs, less Python per forward)."""
    with torch.no_grad(), warnings.catch_warnings():
        # The graphs' shapes are fixed but for the batch, which the trace keeps free (a test checks it).
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        # TorchScript is deprecated from torch 2.14 on (still supported; the pinned torch is 2.14.1).
        warnings.filterwarnings('ignore', category=FutureWarning, module='torch.jit')
        return torch.jit.freeze(torch.jit.trace(module.eval(), example, check_trace=False))
