"""KDLoss against closed forms (Hinton et al. 2015)."""
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from trainables.losses import KDLoss


def _batch(seed=0, n=16, c=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g) * scale
    t = torch.randn(n, c, generator=g) * scale
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


def test_alpha_zero_is_cross_entropy():
    s, t, y = _batch()
    for teacher in (None, t):
        got = KDLoss(0.0, 4.0)(s, y, teacher)
        assert torch.allclose(got, F.cross_entropy(s, y))
    smooth = KDLoss(0.0, 4.0, label_smoothing=0.1)(s, y, t)
    assert torch.allclose(smooth, F.cross_entropy(s, y, label_smoothing=0.1))


def test_no_teacher_is_cross_entropy_even_with_alpha():
    s, _, y = _batch()
    assert torch.allclose(KDLoss(0.7, 2.0)(s, y), F.cross_entropy(s, y))


def test_identical_logits_have_zero_soft_term():
    s, _, y = _batch()
    loss = KDLoss(1.0, 4.0)
    assert loss(s, y, s.clone()).abs().item() < 1e-6
    half = KDLoss(0.5, 4.0)(s, y, s.clone())
    assert torch.allclose(half, 0.5 * F.cross_entropy(s, y), atol=1e-6)


@pytest.mark.parametrize("alpha,T", [(0.3, 1.0), (0.5, 4.0), (0.9, 20.0)])
def test_matches_hand_computation_with_distributions(alpha, T):
    s, t, y = _batch(seed=1)
    kl = kl_divergence(Categorical(logits=t / T), Categorical(logits=s / T)).mean()
    expected = (1 - alpha) * F.cross_entropy(s, y) + alpha * T * T * kl
    assert torch.allclose(KDLoss(alpha, T)(s, y, t), expected, rtol=1e-5, atol=1e-6)


def _soft_grad_norm(T):
    s, t, y = _batch(seed=2, scale=0.5)  # small logits: the high-temperature regime
    s.requires_grad_(True)
    KDLoss(1.0, T)(s, y, t).backward()
    return s.grad.norm().item()


def test_soft_gradient_is_about_temperature_invariant():
    ratio = _soft_grad_norm(8.0) / _soft_grad_norm(4.0)
    assert 0.9 < ratio < 1.1, ratio  # without the T^2 factor it would be ~1/4


def test_extreme_logits_stay_finite():
    s, t, y = _batch(seed=3)
    s = (s.sign() * 1e4).requires_grad_(True)
    t = -t.sign() * 1e4
    for T in (1.0, 4.0):
        loss = KDLoss(0.5, T)(s, y, t)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
        s.grad = None


def test_bf16_inputs_are_upcast():
    s, t, y = _batch(seed=4)
    got = KDLoss(0.5, 4.0)(s.bfloat16(), y, t.bfloat16())
    ref = KDLoss(0.5, 4.0)(s.bfloat16().float(), y, t.bfloat16().float())
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=1e-6)


def test_teacher_receives_no_gradient():
    s, t, y = _batch(seed=5)
    t.requires_grad_(True)
    KDLoss(0.5, 4.0)(s.requires_grad_(True), y, t).backward()
    assert t.grad is None


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="alpha"):
        KDLoss(1.5, 4.0)
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(0.5, 0.0)
