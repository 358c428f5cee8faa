"""The fused CPU BiGRU op (``torch.ops.fairesi.bigru``) against ``torch.nn.GRU``.

Like tests/test_ops.py, these need the op library; ``FAIRESI_NO_OPS=1`` skips them.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from fairesi import ops

if os.environ.get("FAIRESI_NO_OPS") == "1":
    pytest.skip("FAIRESI_NO_OPS=1: the op library is not used", allow_module_level=True)


def _gru(
    n_in: int, hidden: int, layers: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0
) -> nn.GRU:
    torch.manual_seed(seed)
    gru = nn.GRU(n_in, hidden, num_layers=layers, batch_first=True, bidirectional=True)
    with torch.no_grad():  # larger than the default init, so that the gates saturate somewhere
        for p in gru.parameters():
            p.mul_(3.0)
    return gru.to(dtype)


def _input(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def _grads(out: torch.Tensor, weight: torch.Tensor, inputs: list[torch.Tensor]):
    return torch.autograd.grad((out * weight).sum(), inputs)


def _layer_args(gru: nn.GRU, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    def stacked(name: str) -> torch.Tensor:
        forward, backward = getattr(gru, f"{name}_l0"), getattr(gru, f"{name}_l0_reverse")
        return torch.stack((forward, backward)).detach()

    return (x, *(stacked(n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))


def test_library_registers_the_op():
    assert ops.fused_gru_available()
    assert ops.use_fused_gru(None) and ops.use_fused_gru(True)
    assert not ops.use_fused_gru(False)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("shape", [(3, 7, 5, 4), (1, 1, 2, 3), (2, 5, 4, 11)])
def test_forward_and_gradients_match_nn_gru_float64(shape, layers):
    # H = 11: the vector code's partial last bundle; T = 1: no recurrence at all.
    n_batch, n_times, n_in, hidden = shape
    gru = _gru(n_in, hidden, layers, torch.float64)
    x = _input((n_batch, n_times, n_in), torch.float64).requires_grad_()
    expected = gru(x)[0]
    got = ops.bigru(gru, x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    weight = _input(expected.shape, torch.float64, seed=5)
    inputs = [x, *gru.parameters()]
    for g, e in zip(_grads(got, weight, inputs), _grads(expected, weight, inputs), strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-11)


def test_forward_and_gradients_match_nn_gru_float32():
    # The float32 path: vectorised gates, a polynomial exp and tanh = 2 sigmoid(2a) - 1.
    gru = _gru(16, 24)
    x = _input((4, 33, 16)).requires_grad_()
    expected = gru(x)[0]
    got = ops.bigru(gru, x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)
    weight = _input(expected.shape, seed=5)
    inputs = [x, *gru.parameters()]
    for g, e in zip(_grads(got, weight, inputs), _grads(expected, weight, inputs), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())


def test_gradcheck_float64():
    gru = _gru(3, 4, dtype=torch.float64)
    args = [a.clone().requires_grad_() for a in _layer_args(gru, _input((2, 5, 3), torch.float64))]
    assert torch.autograd.gradcheck(torch.ops.fairesi.bigru, args)


def test_opcheck():
    for dtype in (torch.float32, torch.float64):
        gru = _gru(3, 4, dtype=dtype)
        args = _layer_args(gru, _input((2, 5, 3), dtype))
        torch.library.opcheck(torch.ops.fairesi.bigru.default, args)
        torch.library.opcheck(
            torch.ops.fairesi.bigru.default, tuple(a.clone().requires_grad_() for a in args)
        )
        torch.library.opcheck(torch.ops.fairesi.bigru_forward.default, args)
        out, hs, gates = torch.ops.fairesi.bigru_forward(*args)
        grad = _input(out.shape, dtype, seed=3)
        torch.library.opcheck(
            torch.ops.fairesi.bigru_backward.default, (grad, args[0], args[1], args[2], hs, gates)
        )


def test_saved_states_are_nn_gru_states():
    # hs holds every direction's states in its own time order, h_0 = 0 first.
    gru = _gru(5, 4, dtype=torch.float64)
    x = _input((3, 6, 5), torch.float64)
    out, hs, gates = torch.ops.fairesi.bigru_forward(*_layer_args(gru, x))
    assert hs.shape == (2, 7, 3, 4) and gates.shape == (2, 6, 3, 16)
    assert hs.dtype == gates.dtype == torch.float64
    torch.testing.assert_close(hs[:, 0], torch.zeros(2, 3, 4, dtype=torch.float64))
    torch.testing.assert_close(hs[0, 1:].transpose(0, 1), out[..., :4])
    torch.testing.assert_close(hs[1, 1:].flip(0).transpose(0, 1), out[..., 4:])


def test_bfloat16_under_autocast_is_close_to_float32():
    gru = _gru(16, 32)
    x = _input((4, 20, 16))
    expected = gru(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ops.bigru(gru, x.requires_grad_())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=0.06)
    got.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in gru.parameters())
    assert x.grad.dtype == torch.float32


def test_when_the_op_applies():
    gru = _gru(4, 3)
    x = _input((2, 5, 4))
    assert ops.fused_gru_applies(gru, x)
    assert not ops.fused_gru_applies(gru, x[0])  # unbatched input
    assert not ops.fused_gru_applies(gru, x[:, :0])  # no time step
    one_way = nn.GRU(4, 3, batch_first=True)
    assert not ops.fused_gru_applies(one_way, x)
    time_first = nn.GRU(4, 3, bidirectional=True)
    assert not ops.fused_gru_applies(time_first, x)
    dropout = nn.GRU(4, 3, num_layers=2, dropout=0.5, batch_first=True, bidirectional=True)
    assert not ops.fused_gru_applies(dropout, x)
    assert ops.fused_gru_applies(dropout.eval(), x)


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, torch.zeros(2, 5), "x must have 3 dimensions"),
        (2, torch.zeros(2, 9, 4), r"w_hh must be \(2, 3H, H\)"),
        (1, torch.zeros(2, 9, 7), r"w_ih must be \(2, 3H, I\)"),
        (3, torch.zeros(2, 8), r"b_ih must be \(2, 9\)"),
        (4, torch.zeros(2, 9, dtype=torch.float64), "b_hh must have x's dtype"),
        (0, torch.zeros(2, 0, 4), "at least one sample of one time step"),
        (0, torch.zeros(2, 5, 4, dtype=torch.int32), "x must be float32"),
    ],
)
def test_input_checks(index, value, match):
    args = list(_layer_args(_gru(4, 3), _input((2, 5, 4))))
    args[index] = value
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fairesi.bigru(*args)


def test_backward_input_checks():
    args = _layer_args(_gru(4, 3), _input((2, 5, 4)))
    out, hs, gates = torch.ops.fairesi.bigru_forward(*args)
    with pytest.raises(RuntimeError, match=r"grad must be \(B, T, 2H\)"):
        torch.ops.fairesi.bigru_backward(out[:, :4], args[0], args[1], args[2], hs, gates)
    with pytest.raises(RuntimeError, match=r"gates must be \(2, T, B, 4H\)"):
        torch.ops.fairesi.bigru_backward(out, args[0], args[1], args[2], hs, gates[:, 1:])


def test_fair_esi_runs_its_bigru_by_the_op_with_nn_gru_results(monkeypatch):
    from fairesi.models.fair_esi import FairEsi, FairEsiConfig

    sizes = {"n_channels": 6, "n_regions": 10, "n_times": 40}
    model = FairEsi(FairEsiConfig.preset("tiny", **sizes)).double()
    assert model.reconstruction.fused_gru
    calls = []
    monkeypatch.setattr(
        "fairesi.models.fair_esi.bigru", lambda gru, x: calls.append(1) or ops.bigru(gru, x)
    )
    x = _input((3, 6, 40), torch.float64)
    got = model(x)
    assert calls == [1]
    plain = FairEsi(FairEsiConfig.preset("tiny", **sizes, fused_gru=False)).double()
    assert not plain.reconstruction.fused_gru
    plain.load_state_dict(model.state_dict())  # the same parameters
    torch.testing.assert_close(got, plain(x), rtol=0, atol=1e-12)
    scripted = torch.jit.script(model)  # TorchScript sees nn.GRU only
    assert "fairesi" not in scripted.reconstruction.code
    torch.testing.assert_close(scripted(x), got, rtol=0, atol=1e-12)
    assert calls == [1]


def test_fused_gru_true_needs_the_library(monkeypatch):
    monkeypatch.setattr("fairesi.ops.gru.fused_gru_available", lambda: False)
    with pytest.raises(RuntimeError, match="fused BiGRU op is not loaded"):
        ops.use_fused_gru(True)
    assert not ops.use_fused_gru(None)
