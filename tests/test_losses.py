import numpy as np
import pytest
import tensorflow as tf

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


def _brains(seed, n=3, size=16):
    """Images in [-1, 1] with background -1 and a disc of random intensities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    images = np.full((n, size, size, 1), -1.0, np.float32)
    images[:, inside] = rng.uniform(-0.8, 0.9, (n, inside.sum(), 1))
    return images, inside


def test_intensity_distribution_loss_compares_histograms_not_pixels():
    images, inside = _brains(0)
    # The same intensities in other places: a permutation inside the brain.
    shuffled = images.copy()
    rng = np.random.default_rng(1)
    for image in shuffled:
        values = image[inside]
        image[inside] = values[rng.permutation(len(values))]
    assert float(losses.intensity_distribution_loss(shuffled, images, images)) < 1e-6
    # A shift of every brain intensity by c is a Wasserstein-1 distance of c.
    shifted = np.where(images > -1, images + 0.1, -1.0)
    assert float(losses.intensity_distribution_loss(shifted, images, images)) == \
        pytest.approx(0.1, abs=1e-6)
    # Only the source's brain counts: the translation's background is ignored, and
    # the target's brain may be another size.
    noisy_background = np.where(images > -1, images, 0.5)
    assert float(losses.intensity_distribution_loss(noisy_background, images, images)) < 1e-6
    other, _ = _brains(2, n=5, size=24)
    assert float(losses.intensity_distribution_loss(images, images, other)) < 0.1
    # U(-0.8, 0.9) against U(-1.3, 0.4): a distance of 0.5.
    darker = np.where(images > -1, images - 0.5, -1.0)
    assert float(losses.intensity_distribution_loss(darker, images, other)) > 0.4


def test_intensity_distribution_loss_gradient_reaches_only_the_brain():
    images, _ = _brains(3)
    translated = tf.Variable(np.where(images > -1, 0.2, 0.7).astype(np.float32))
    with tf.GradientTape() as tape:
        value = losses.intensity_distribution_loss(translated, images, images)
    grad = tape.gradient(value, translated).numpy()
    assert float(value) > 0.1
    assert np.abs(grad[images > -1]).sum() > 0 and not np.any(grad[images <= -1])
