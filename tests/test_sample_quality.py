"""hf_vqvae.evaluation.sample_quality: Fréchet distance, KID, improved precision/recall, FeatureNetwork and CAS,
checked on values (closed forms, hand-worked examples, an independent implementation) rather than shapes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

from hf_vqvae.evaluation import (
    FeatureNetwork,
    classification_accuracy_score,
    compare,
    frechet_distance,
    frechet_distance_from_moments,
    kernel_distance,
    precision_recall,
)

try:  # the PIL-backed processor needs no torchvision (transformers >= 5 names it so)
    from transformers import ViTImageProcessorPil as ViTImageProcessor
except ImportError:
    from transformers import ViTImageProcessor


def _rotation(dim: int, seed: int) -> np.ndarray:
    """A random orthogonal (dim, dim) matrix."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------------------------


def test_frechet_distance_from_moments_matches_the_closed_form_for_diagonal_covariances():
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([0.5, -1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # N(μa, diag σa²) vs N(μb, diag σb²): |μa − μb|² + Σ (σa − σb)²
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = frechet_distance_from_moments(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_frechet_distance_from_moments_matches_the_closed_form_for_commuting_covariances():
    # Σa = Q diag(a) Qᵀ and Σb = Q diag(b) Qᵀ commute, so tr((Σa Σb)^½) = Σ √(a b) and FD = |Δμ|² + Σ (√a − √b)².
    q, a, b = _rotation(4, seed=1), np.array([1.0, 2.0, 3.0, 0.5]), np.array([4.0, 0.5, 3.0, 2.0])
    mu_a, mu_b = np.array([1.0, 0.0, 0.0, 2.0]), np.zeros(4)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance_from_moments(mu_a, q @ np.diag(a) @ q.T, mu_b, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_from_moments_agrees_with_scipy_sqrtm_for_general_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    sigma_a, sigma_b = x @ x.T, y @ y.T  # do not commute
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    reference_sqrt = linalg.sqrtm(sigma_a @ sigma_b).real
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * reference_sqrt)
    assert frechet_distance_from_moments(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(0)
    mu_a, mu_b = np.array([0.0, 1.0, 0.0, -1.0]), np.array([1.0, 1.0, 0.5, 0.0])
    std_a, std_b = np.array([1.0, 2.0, 0.5, 1.0]), np.array([1.5, 1.0, 0.5, 2.0])
    samples_a = mu_a + std_a * rng.normal(size=(50_000, 4))
    samples_b = torch.from_numpy(mu_b + std_b * rng.normal(size=(40_000, 4)))  # torch input, other N
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((std_a - std_b) ** 2)  # 2.25 + 2.5 = 4.75
    assert frechet_distance(samples_a, samples_b) == pytest.approx(expected, rel=0.03)


def test_frechet_distance_is_zero_for_identical_sets_and_symmetric():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))  # correlated features
    b = rng.normal(size=(200, 16)) + 0.3
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, b) > 1.0
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_explains_bad_input():
    good = np.zeros((10, 4))
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(good, np.zeros((10, 5)))
    with pytest.raises(ValueError, match="1 sample.*at least 2"):
        frechet_distance(good, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        frechet_distance(good, np.full((10, 4), np.nan))
    with pytest.raises(ValueError, match=r"\(num_samples, feature_dim\)"):
        frechet_distance(np.zeros(10), good)
    with pytest.raises(ValueError, match=r"sigma_b must be a \(2, 2\)"):
        frechet_distance_from_moments(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# ---------------------------------------------------------------------------------------------------------------
# Kernel distance
# ---------------------------------------------------------------------------------------------------------------


def _brute_force_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski et al. 2018, eq. 4, term by term with k(u, v) = (u·v / D + 1)³."""
    m, dim = len(x), x.shape[1]

    def kernel(u, v):
        return (u @ v / dim + 1) ** 3

    within = sum(kernel(x[i], x[j]) + kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    across = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2 * across / m**2


def test_kernel_distance_of_one_full_subset_is_the_unbiased_mmd2():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.5
    # One subset of the whole (equal-sized) sets is a permutation of them; MMD² does not depend on order.
    result = kernel_distance(x, y, num_subsets=1, subset_size=100)
    assert result["mean"] == pytest.approx(_brute_force_unbiased_mmd2(x, y), rel=1e-10)
    assert result["std"] == 0.0


def test_kernel_distance_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    same = kernel_distance(real, fake, num_subsets=10, subset_size=500)
    shifted = [kernel_distance(real, fake + shift, num_subsets=10, subset_size=500)["mean"]
               for shift in (0.25, 0.5, 1.0)]  # fmt: skip
    assert abs(same["mean"]) < 0.1 * shifted[0] and same["std"] > 0
    assert 0.1 < shifted[0] < shifted[1] < shifted[2]


def test_kernel_distance_is_deterministic_for_a_seed():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(200, 5)), torch.from_numpy(rng.normal(size=(150, 5)))
    first = kernel_distance(real, fake, num_subsets=5, subset_size=50, seed=1)
    assert kernel_distance(real, fake, num_subsets=5, subset_size=50, seed=1) == first
    assert kernel_distance(real, fake, num_subsets=5, subset_size=50, seed=2) != first
    with pytest.raises(ValueError, match="subset_size >= 2"):
        kernel_distance(real, fake, subset_size=1)


# ---------------------------------------------------------------------------------------------------------------
# Improved precision and recall
# ---------------------------------------------------------------------------------------------------------------


def test_precision_recall_of_a_hand_worked_example():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])  # nearest-neighbour radius 1 each
    fake = torch.tensor([[0.5], [10.0]])  # radius 9.5 each
    # precision: 0.5 is inside real ball around 0; 10 is 7 away from the nearest real point -> 1/2.
    # recall: the fake ball [−9, 10] around 0.5 holds every real point -> 1.
    for batch_size in (1, 3, 100):  # blocks smaller than, not dividing, and larger than the sets
        assert precision_recall(real, fake, k=1, batch_size=batch_size) == {"precision": 0.5, "recall": 1.0}


def test_precision_recall_of_a_tight_cluster_inside_a_broad_cloud():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(500, 2))
    fake = 0.05 * rng.normal(size=(200, 2))  # realistic but covers almost nothing
    scores = precision_recall(real, fake, k=3, batch_size=64)
    assert scores["precision"] >= 0.95
    assert scores["recall"] <= 0.1


def test_precision_recall_of_identical_and_of_disjoint_sets():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(300, 4))
    assert precision_recall(real, real.copy()) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(real, real + 100.0) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_needs_more_points_than_k():
    points = np.zeros((3, 2))
    with pytest.raises(ValueError, match="k=3 needs more than k points"):
        precision_recall(points, np.ones((10, 2)), k=3)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        precision_recall(points, points, k=0)


def test_compare_reports_every_metric_consistently():
    rng = np.random.default_rng(9)
    real, fake = rng.normal(size=(120, 6)), rng.normal(size=(100, 6)) + 0.5
    scores = compare(real, fake, k=2, kid_subsets=4, kid_subset_size=50, seed=3)
    kid = kernel_distance(real, fake, num_subsets=4, subset_size=50, seed=3)
    assert scores == {"fd": frechet_distance(real, fake), "kid_mean": kid["mean"], "kid_std": kid["std"],
                      **precision_recall(real, fake, k=2)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# FeatureNetwork
# ---------------------------------------------------------------------------------------------------------------


def _tiny_resnet(num_labels: int = 3) -> ResNetForImageClassification:
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          num_labels=num_labels)  # fmt: skip
    return ResNetForImageClassification(config)


@pytest.fixture
def resnet_folder(tmp_path):
    """A tiny random ResNet saved like a Hub classifier: resize to 16x16, map [0, 1] to [-1, 1]."""
    folder = tmp_path / "tiny-resnet"
    model = _tiny_resnet().eval()
    model.save_pretrained(folder)
    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(folder)
    return folder, model


def test_feature_network_returns_the_resnet_pooled_output_of_the_processed_images(resnet_folder):
    folder, model = resnet_folder
    network = FeatureNetwork(folder)
    images = torch.rand(5, 3, 12, 12)
    features = network.features(images, batch_size=2)

    resized = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        expected = model.resnet((resized - 0.5) / 0.5).pooler_output.flatten(1)
        logits = model(pixel_values=(resized - 0.5) / 0.5).logits
        head_logits = model.classifier(features)
    assert features.shape == (5, 16) and features.dtype == torch.float32 and features.device.type == "cpu"
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(head_logits, logits)  # the features are exactly what the head reads
    assert network.name == "tiny-resnet"
    assert network.metric_label("FD") == "FD (tiny-resnet features)"


def test_feature_network_runs_in_eval_mode_without_grad_and_restores_training_mode(resnet_folder):
    _, model = resnet_folder
    network = FeatureNetwork(model, name="mine")
    images = torch.rand(3, 3, 16, 16)
    eval_features = network.features(images)
    model.train()  # batch norm would use batch statistics if features() did not switch to eval mode
    features = network.features(images)
    torch.testing.assert_close(features, eval_features)
    assert model.training and not features.requires_grad
    assert network.metric_label("KID") == "KID (mine features)"


def test_feature_network_reads_the_class_token_of_a_vision_transformer():
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=37, num_labels=3)  # fmt: skip
    model = ViTForImageClassification(config).eval()
    network = FeatureNetwork(model)  # a model instance: no resize, no normalisation
    images = torch.rand(4, 3, 16, 16)
    features = network.features(images)
    with torch.no_grad():
        torch.testing.assert_close(model.classifier(features), model(pixel_values=images).logits)
    assert features.shape == (4, 32) and network.name == "vit"


# ---------------------------------------------------------------------------------------------------------------
# Classification accuracy score
# ---------------------------------------------------------------------------------------------------------------

_COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])


def _coloured_squares(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images of one constant colour per class plus Gaussian noise, in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(per_class)
    noise = 0.1 * torch.randn(len(labels), 3, 8, 8, generator=generator)
    return (_COLOURS[labels][:, :, None, None] + noise).clamp(0, 1), labels


def _cas(train_images, train_labels, test_images, test_labels, seed=0):
    return classification_accuracy_score(train_images, train_labels, test_images, test_labels, build_model=_tiny_resnet,
                                         steps=30, batch_size=16, learning_rate=1e-2, seed=seed)  # fmt: skip


def test_classification_accuracy_score_separates_true_from_shuffled_labels():
    train_images, train_labels = _coloured_squares(per_class=18, seed=0)
    test_images, test_labels = _coloured_squares(per_class=20, seed=1)
    accuracy = _cas(train_images, train_labels, test_images, test_labels)
    # Labels independent of the colour: every colour carries each label equally often (6 of its 18 images).
    uninformative = torch.arange(len(train_labels)) % 3
    chance_level = _cas(train_images, uninformative, test_images, test_labels)
    assert accuracy >= 0.95
    assert chance_level <= 0.6
    assert _cas(train_images, train_labels, test_images, test_labels) == accuracy  # deterministic for a seed
