"""The KD losses against closed forms written here: Hinton KD, DKD, DIST, logit MSE and
logit standardisation; the registry (names, errors, config fields)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Categorical, kl_divergence

from kdtune.trainables import losses
from kdtune.trainables.config import DistillConfig
from kdtune.trainables.losses import KDLoss, create_loss, list_losses, loss_from_config


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


# ---- registry ----------------------------------------------------------------------------
def test_registry_lists_every_method_and_refuses_unknown_names():
    assert set(list_losses()) >= {"kd", "dkd", "dist", "mse"}
    assert list_losses() == sorted(list_losses())
    with pytest.raises(ValueError, match=r"unknown KD method 'dkdd' \(did you mean 'dkd'\?\); known: at, crd, dist, dkd, fitnet, kd, kd_weighted, mse, pkt, reviewkd, rkd, sp"):
        create_loss("dkdd")
    with pytest.raises(ValueError, match="registered twice"):
        @losses.register_loss
        class Again(losses.DistillationLoss):
            name = "kd"


def test_config_builds_the_method_with_its_own_fields():
    # kd's temperature=9 reaches neither dkd nor dist: each reads its own T field.
    loss = loss_from_config(DistillConfig(kd_method="dkd", dkd_alpha=0.5, dkd_beta=2.0, dkd_temperature=3.0,
                                          temperature=9.0, dkd_warmup=5, logit_standardize=True,
                                          label_smoothing=0.1))
    assert isinstance(loss, losses.DKDLoss)
    assert (loss.alpha, loss.beta, loss.temperature, loss.warmup_epochs, loss.standardize,
            loss.label_smoothing) == (0.5, 2.0, 3.0, 5, True, 0.1)
    dist = loss_from_config(DistillConfig(kd_method="dist", dist_beta=2.0, dist_gamma=3.0, dist_temperature=4.0,
                                          temperature=9.0))
    assert (dist.beta, dist.gamma, dist.temperature) == (2.0, 3.0, 4.0)
    assert loss_from_config(DistillConfig(kd_method="mse", alpha=0.3)).alpha == 0.3
    with pytest.raises(ValueError, match="logit_standardize applies to KD methods dkd, kd, kd_weighted, not to 'dist'"):
        DistillConfig(kd_method="dist", logit_standardize=True)
    with pytest.raises(ValueError, match="unknown kd_method 'hinton'"):
        DistillConfig(kd_method="hinton")
    # dkd and dist weight no alpha: alpha = 0 is not a baseline for them.
    assert not DistillConfig(kd_method="dkd", alpha=0.0, teacher_checkpoint="x").is_baseline
    assert DistillConfig(kd_method="dkd", dkd_alpha=0.0, dkd_beta=0.0, teacher_checkpoint="x").is_baseline


def test_a_method_needing_an_output_no_source_provides_is_refused_with_a_message(monkeypatch):
    class Attention(losses.DistillationLoss):
        name = "attn_maps"
        needs = ("attention_maps",)

    monkeypatch.setitem(losses.registry._REGISTRY, "attn_maps", Attention)
    cfg = DistillConfig(kd_method="attn_maps")
    with pytest.raises(ValueError, match="needs the teacher's attention_maps, which no teacher source provides"):
        loss_from_config(cfg)


def test_an_unbound_feature_method_says_it_needs_the_models():
    loss = loss_from_config(DistillConfig(kd_method="fitnet"))
    s, t, y = _batch(seed=1)
    with pytest.raises(RuntimeError, match="was not bound to a student and a teacher"):
        loss(s, y, t)
    assert torch.equal(loss(s, y), F.cross_entropy(s, y))  # no teacher: plain CE


# ---- every method ------------------------------------------------------------------------
# Every registered loss at its defaults (a method added later is covered too), plus options.
# Feature methods need bound models: tests/test_feature_methods.py covers them.
ALL = [(name, {}) for name in list_losses() if "features" not in losses.loss_class(name).needs] + [
    ("kd", {"alpha": 0.5, "temperature": 2.0, "standardize": True}),
    ("dkd", {"warmup_epochs": 0, "standardize": True}), ("dist", {"temperature": 4.0}), ("mse", {"alpha": 0.5})]


@pytest.mark.parametrize("name,kw", ALL)
def test_every_method_is_finite_for_extreme_logits_and_trains_only_the_student(name, kw):
    s, t, y = _batch(seed=6)
    for scale in (1e4, 1e-6):
        student = (s.sign() * scale).requires_grad_(True)
        teacher = (-t.sign() * scale).requires_grad_(True)
        loss = create_loss(name, **kw)(student, y, teacher)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(student.grad).all(), (name, scale)
        assert student.grad.abs().sum() > 0 and teacher.grad is None
    # bf16 logits (autocast, a bf16 view cache) are upcast: same value as float32 inputs.
    got = create_loss(name, **kw)(s.bfloat16(), y, t.bfloat16())
    ref = create_loss(name, **kw)(s.bfloat16().float(), y, t.bfloat16().float())
    assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("name,kw", ALL)
def test_without_teacher_every_method_is_cross_entropy(name, kw):
    s, _, y = _batch(seed=7)
    assert torch.allclose(create_loss(name, **kw)(s, y), F.cross_entropy(s, y))


# ---- DKD ---------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_is_tckd_plus_one_minus_teacher_target_prob_times_nckd(T):
    s, t, y = _batch(seed=8, n=32)
    tckd, nckd = losses.DKDLoss(temperature=T).decoupled_terms(s, t, y)
    kl = kl_divergence(Categorical(logits=t / T), Categorical(logits=s / T))  # per example
    p_target = F.softmax(t / T, dim=1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(tckd + (1 - p_target) * nckd, kl, rtol=1e-4, atol=1e-5)


def _dkd_by_hand(s, t, y, alpha, beta, T):
    """TCKD as a Bernoulli KL (target vs rest), NCKD as a KL over the other classes."""
    p_t = F.softmax(t / T, 1).gather(1, y[:, None]).squeeze(1)
    p_s = F.softmax(s / T, 1).gather(1, y[:, None]).squeeze(1)
    tckd = kl_divergence(Bernoulli(probs=p_t), Bernoulli(probs=p_s))
    keep = torch.ones_like(s, dtype=torch.bool).scatter_(1, y[:, None], False)
    others = lambda z: z[keep].view(len(z), -1) / T  # noqa: E731
    nckd = kl_divergence(Categorical(logits=others(t)), Categorical(logits=others(s)))
    return T * T * (alpha * tckd.mean() + beta * nckd.mean())


def test_dkd_matches_the_decoupled_formula_with_linear_warmup():
    s, t, y = _batch(seed=9, n=32, scale=2.0)
    loss = losses.DKDLoss(alpha=1.5, beta=6.0, temperature=3.0, warmup_epochs=4)
    kd = _dkd_by_hand(s, t, y, 1.5, 6.0, 3.0)
    ce = F.cross_entropy(s, y)
    # At an epoch's end (fraction 1, also what set_epoch alone gives): mdistiller's epoch / 4.
    for epoch, weight in ((1, 0.25), (2, 0.5), (4, 1.0), (9, 1.0)):
        loss.set_epoch(epoch)
        assert torch.allclose(loss(s, y, t), ce + weight * kd, rtol=1e-5), epoch
    # Within an epoch the weight ramps linearly: a quarter into epoch 2 is 1.25 epochs done.
    loss.set_epoch(2)
    loss.set_epoch_fraction(0.25)
    assert torch.allclose(loss(s, y, t), ce + (1.25 / 4) * kd, rtol=1e-5)
    one_epoch = losses.DKDLoss(alpha=1.5, beta=6.0, temperature=3.0, warmup_epochs=1)
    one_epoch.set_epoch_fraction(0.1)  # a 1-epoch warm-up does not start at full weight
    assert torch.allclose(one_epoch(s, y, t), ce + 0.1 * kd, rtol=1e-5)
    no_warmup = losses.DKDLoss(alpha=1.5, beta=6.0, temperature=3.0, warmup_epochs=0)
    assert torch.allclose(no_warmup(s, y, t), ce + kd, rtol=1e-5)


# ---- DIST --------------------------------------------------------------------------------
def test_dist_of_identical_logits_is_cross_entropy_only():
    s, _, y = _batch(seed=10)
    loss = losses.DISTLoss(beta=2.0, gamma=2.0, temperature=4.0)
    inter, intra = loss.relations(s, s.clone())
    assert inter.abs() < 1e-6 and intra.abs() < 1e-6
    assert torch.allclose(loss(s, y, s.clone()), F.cross_entropy(s, y), atol=1e-5)


def test_dist_matches_numpy_pearson_correlations():
    s, t, y = _batch(seed=11, n=12, c=7, scale=2.0)
    beta, gamma, tau = 1.5, 0.5, 2.0
    y_s = F.softmax(s / tau, 1).double().numpy()
    y_t = F.softmax(t / tau, 1).double().numpy()
    inter = 1 - np.mean([np.corrcoef(y_s[i], y_t[i])[0, 1] for i in range(len(y_s))])
    intra = 1 - np.mean([np.corrcoef(y_s[:, c], y_t[:, c])[0, 1] for c in range(y_s.shape[1])])
    expected = F.cross_entropy(s, y).item() + tau ** 2 * (beta * inter + gamma * intra)
    got = losses.DISTLoss(beta=beta, gamma=gamma, temperature=tau)(s, y, t).item()
    assert got == pytest.approx(expected, rel=1e-5)


# ---- logit standardisation and MSE -------------------------------------------------------
def test_standardised_logits_are_invariant_to_shift_and_scale():
    s, t, y = _batch(seed=12)
    z = losses.standardize(s)
    assert torch.allclose(z.mean(1), torch.zeros(len(s)), atol=1e-6)
    assert torch.allclose(z.std(1), torch.ones(len(s)), atol=1e-5)
    assert torch.allclose(losses.standardize(3.0 * s + 5.0), z, atol=1e-5)
    # The option changes kd's and dkd's soft terms alike: a rescaled, shifted teacher (and
    # student) gives the same loss.
    for name in ("kd", "dkd"):
        loss = create_loss(name, temperature=2.0, standardize=True)
        assert torch.allclose(loss(s, y, 0.25 * t - 7.0), loss(s, y, t), rtol=1e-4), name
        soft = (lambda a, b: loss.soft_term(a, b)) if name == "kd" else \
            (lambda a, b: sum(x.mean() for x in loss.decoupled_terms(a, b, y)))
        assert torch.allclose(soft(4.0 * s + 1.0, t), soft(s, t), rtol=1e-4), name
    # Without standardisation the teacher's scale matters (the test above can fail).
    plain_kd = create_loss("kd", temperature=2.0)
    assert not torch.allclose(plain_kd(s, y, 0.25 * t), plain_kd(s, y, t), rtol=1e-3)


def test_mse_is_mean_squared_logit_error_mixed_with_cross_entropy():
    s, t, y = _batch(seed=13)
    for alpha in (1.0, 0.4):
        expected = (1 - alpha) * F.cross_entropy(s, y) + alpha * ((s - t) ** 2).sum() / s.numel()
        assert torch.allclose(create_loss("mse", alpha=alpha)(s, y, t), expected, rtol=1e-6)
    assert not create_loss("mse", alpha=0.0).uses_teacher
