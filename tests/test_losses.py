import numpy as np
import pytest
import tensorflow as tf

from colab_utils.models import losses


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


def _random_image(seed, size=24):
    image = np.random.default_rng(seed).uniform(-1, 1, (2, size, size, 1)).astype("float32")
    image[:, 6:14, 8:18] += 1.5  # a bright block: edges in both orientations
    return image


def test_mind_descriptor_shape_range_and_edge_orientation():
    image = np.zeros((1, 9, 9, 1), "float32")
    image[..., 5:, :] = 1.0  # a vertical edge between columns 4 and 5
    desc = np.asarray(losses.mind_descriptor(image))
    assert desc.shape == (1, 9, 9, 1, 4)
    assert desc.min() > 0 and np.allclose(desc.max(axis=-1), 1.0)
    # Neighbours (up, down, left, right). On the edge, the rows above and below
    # look the same and the columns across the edge do not.
    on_edge = desc[0, 4, 4, 0]
    assert on_edge[0] == pytest.approx(1.0) and on_edge[1] == pytest.approx(1.0)
    assert on_edge[3] < 0.3
    # Far from the edge every neighbour looks the same.
    np.testing.assert_allclose(desc[0, 4, 0, 0], 1.0)


def test_structure_loss_ignores_contrast_but_not_structure():
    image = _random_image(0)
    inverted = 1.0 - 3.0 * image  # a T1 -> T2 like inversion of the contrast
    assert float(losses.structure_loss(image, inverted)) < 1e-5
    assert float(losses.structure_loss(image, np.roll(image, 1, axis=2))) > 0.1
    assert float(losses.structure_loss(image, _random_image(1))) > 0.1


def test_structure_loss_is_finite_with_its_gradient_on_flat_images():
    flat = tf.zeros((2, 24, 24, 1))
    image = tf.Variable(_random_image(2))
    with tf.GradientTape() as tape:
        value = losses.structure_loss(flat, flat) + losses.structure_loss(flat, image)
    grad = tape.gradient(value, image).numpy()
    assert np.isfinite(float(value)) and np.isfinite(grad).all() and np.abs(grad).max() > 0
