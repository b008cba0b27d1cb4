"""The fp32 clipping that keeps its gradient norm: the log's grad_norm and the non-finite guard read that norm, and
the step must still be clipped (tests/test_resume.py covers the guard in a run)."""
from types import SimpleNamespace

import torch

from utils.engine.guards import keep_clipping_norm


def test_one_pass_clips_to_the_limit_and_keeps_the_norm_before_clipping():
    """Planted and seen failing: the norm computed without clipping the gradients (get_total_norm alone)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1, bias=False))
    model(torch.randn(5, 4)).pow(2).sum().mul(100).backward()
    model[1].weight.grad = None  # a parameter without a gradient is left out, as DeepSpeed's clipping does
    before = [p.grad.clone() for p in model[0].parameters()]
    norm = torch.cat([g.flatten() for g in before]).norm()
    assert norm > 1.0
    engine = SimpleNamespace(module=model, gradient_clipping=lambda: 1.0, _global_grad_norm=None)
    keep_clipping_norm(engine)
    engine.clip_fp32_gradients()
    assert torch.isclose(engine._global_grad_norm, norm)
    for grad, old in zip((p.grad for p in model[0].parameters()), before):
        torch.testing.assert_close(grad, old / norm, rtol=1e-5, atol=1e-7)
