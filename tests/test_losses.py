import numpy as np
import pytest

from colab_utils import losses


def test_lsgan_generator_loss_by_hand():
    # mean((d - 1)^2) over [0, 1, 3] = (1 + 0 + 4) / 3
    assert float(losses.lsgan_generator_loss(np.array([0.0, 1.0, 3.0]))) == pytest.approx(5 / 3)


def test_lsgan_discriminator_loss_by_hand():
    real, fake = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    # 0.5 * (mean([0, 1]) + mean([0, 4])) = 0.5 * (0.5 + 2)
    assert float(losses.lsgan_discriminator_loss(real, fake)) == pytest.approx(1.25)


def test_bce_losses_by_hand():
    logits = np.array([0.0, 2.0])
    expected_gen = np.mean(np.log1p(np.exp(-logits)))  # -log(sigmoid(x))
    assert float(losses.bce_generator_loss(logits)) == pytest.approx(expected_gen, rel=1e-5)
    real, fake = np.array([1.0]), np.array([-1.0])
    expected = 0.5 * (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-1.0)))
    assert float(losses.bce_discriminator_loss(real, fake)) == pytest.approx(expected, rel=1e-5)


def test_l1_terms_by_hand():
    a = np.array([[0.0, 1.0], [2.0, -1.0]])
    b = np.array([[1.0, 1.0], [0.0, 1.0]])
    # |diffs| = 1, 0, 2, 2 -> mean 1.25
    for fn in (losses.cycle_loss, losses.identity_loss, losses.supervised_loss, losses.l1):
        assert float(fn(a, b)) == pytest.approx(1.25)
    assert float(losses.cycle_loss(a, a)) == 0.0


def test_perfect_discriminator_and_generator_values():
    ones, zeros = np.ones(4), np.zeros(4)
    assert float(losses.lsgan_discriminator_loss(ones, zeros)) == 0.0
    assert float(losses.lsgan_generator_loss(ones)) == 0.0
    assert float(losses.lsgan_generator_loss(zeros)) == 1.0


def test_adversarial_losses_factory():
    assert losses.adversarial_losses("lsgan") == (losses.lsgan_generator_loss,
                                                 losses.lsgan_discriminator_loss)
    assert losses.adversarial_losses("bce")[0] is losses.bce_generator_loss
    with pytest.raises(ValueError, match="'lsgan', 'bce'"):
        losses.adversarial_losses("wgan")
