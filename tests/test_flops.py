"""dreamrl.flops.counted: the counter every FLOP figure of the project goes through."""

import torch

from dreamrl.flops import counted


def test_counted_returns_the_work_result_and_a_hand_counted_product():
    layer = torch.nn.Linear(8, 5, bias=False)
    x = torch.randn(3, 8)
    with torch.no_grad():
        y, flops = counted(lambda: layer(x))
    assert torch.equal(y, x @ layer.weight.T)
    assert flops == 2 * 3 * 8 * 5  # one multiply and one add per term of a [3,8] x [8,5] product


def test_counted_includes_the_backward_pass_when_the_work_runs_it():
    layer = torch.nn.Linear(8, 5, bias=False)
    x = torch.randn(3, 8, requires_grad=True)
    _, flops = counted(lambda: layer(x).sum().backward())
    # forward, the input's gradient and the weight's gradient: three products of one size
    assert flops == 3 * (2 * 3 * 8 * 5)
