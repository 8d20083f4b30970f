"""Offline sample-quality metrics for generated images, computed on the features of any image classifier.

Feature-space metrics compare a set of real images with a set of generated ones through the penultimate features
of a classifier (`FeatureNetwork`):

- `frechet_distance`: the Fréchet distance between Gaussians fitted to the two feature sets (Heusel et al. 2017,
  "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"). With Inception-v3 pool
  features this is FID; with any other network it is *not* FID, so report it as "FD (<network> features)"
  (`FeatureNetwork.metric_label("FD")`).
- `kernel_distance`: the kernel (KID-style) distance, an unbiased MMD² with a cubic polynomial kernel
  (Bińkowski et al. 2018, "Demystifying MMD GANs").
- `precision_recall`: k-nearest-neighbour manifold precision and recall (Kynkäänniemi et al. 2019, "Improved
  Precision and Recall Metric for Assessing Generative Models").

`classification_accuracy_score` measures samples the other way round: a classifier trained only on generated
images, tested on real ones (Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional Generative
Models").

    >>> network = FeatureNetwork("outputs/mnist-classifier")
    >>> scores = compare(network.features(real_images), network.features(samples))
    >>> print(f"{network.metric_label('FD')}: {scores['fd']:.2f}")

Nothing here downloads anything: pass a local folder, or a Hub id already in the cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ..pipelines.classifier_judge import ClassifierJudge
from .metrics import eval_mode

# The reference KID settings (Bińkowski et al. 2018, §4; torch-fidelity and clean-fid use the same defaults).
DEFAULT_KID_SUBSETS, DEFAULT_KID_SUBSET_SIZE = 100, 1000
# Rows (and columns) of one block of pairwise distances in `precision_recall`: a 4096 x 4096 float32 block is 64 MiB.
DEFAULT_DISTANCE_BLOCK = 4096


# ---------------------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------------------


def _check_feature_matrix(shape: tuple, all_finite: bool, name: str, min_samples: int = 2) -> None:
    """Errors unless `shape` is (N, D) with N >= min_samples, D >= 1, and every value is finite."""
    if len(shape) != 2 or shape[1] < 1:
        raise ValueError(f"{name} must be a (num_samples, feature_dim) matrix, got shape {tuple(shape)}; "
                         "flatten or pool the features first")  # fmt: skip
    if shape[0] < min_samples:
        raise ValueError(f"{name} has {shape[0]} sample(s); at least {min_samples} are needed")
    if not all_finite:
        raise ValueError(f"{name} contains NaN or infinite values; check the feature network's inputs")


def _check_same_dim(dim_a: int, dim_b: int) -> None:
    if dim_a != dim_b:
        raise ValueError(f"the two feature sets have different dimensions ({dim_a} and {dim_b}); "
                         "extract both with the same feature network")  # fmt: skip


def _as_float64(features, name: str, min_samples: int = 2) -> np.ndarray:
    """A numpy or torch (N, D) feature matrix as a checked float64 numpy array."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    array = np.asarray(features, dtype=np.float64)
    _check_feature_matrix(array.shape, bool(np.isfinite(array).all()), name, min_samples)
    return array


def _as_float32_tensor(features, name: str, min_samples: int = 2) -> torch.Tensor:
    """A numpy or torch (N, D) feature matrix as a checked float32 tensor (a tensor stays on its device)."""
    tensor = torch.as_tensor(features).detach().float()
    _check_feature_matrix(tuple(tensor.shape), bool(torch.isfinite(tensor).all()), name, min_samples)
    return tensor


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------------------------


def frechet_distance(features_a, features_b) -> float:
    """
    Fréchet distance between the Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6, after Dowson &
    Landau 1982): |μa − μb|² + tr(Σa) + tr(Σb) − 2 tr((Σa Σb)^½), with the sample means and the unbiased (N − 1)
    covariances. It is FID only when the features are Inception-v3 pool features.

    Args:
        features_a, features_b (`np.ndarray` or `torch.Tensor` of shape `(N, D)`): the two feature sets (their N
            may differ, D may not); each needs N >= 2. Computed in float64.

    Returns:
        `float` >= 0; 0 for identical sets.
    """
    a, b = _as_float64(features_a, "features_a"), _as_float64(features_b, "features_b")
    _check_same_dim(a.shape[1], b.shape[1])
    return frechet_distance_from_moments(*_gaussian_moments(a), *_gaussian_moments(b))


def _gaussian_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> the sample mean (D,) and the unbiased (N − 1) covariance (D, D)."""
    covariance = np.cov(features, rowvar=False, ddof=1).reshape(features.shape[1], features.shape[1])
    return features.mean(axis=0), covariance


def frechet_distance_from_moments(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """
    Fréchet distance between N(μa, Σa) and N(μb, Σb) (Heusel et al. 2017, eq. 6):
    |μa − μb|² + tr(Σa) + tr(Σb) − 2 tr((Σa Σb)^½).

    The trace of the square root needs no scipy: with S = Σa^½ (symmetric, from `eigh`), Σa Σb is similar to the
    symmetric PSD matrix S Σb S, so tr((Σa Σb)^½) = Σ √λ over the eigenvalues λ of S Σb S. Eigenvalues that round
    below zero are clipped to 0, and so is a total that rounds below 0.

    Args:
        mu_a, mu_b (array-like of shape `(D,)`): the means.
        sigma_a, sigma_b (array-like of shape `(D, D)`): symmetric positive semi-definite covariances.
    """
    mu_a, mu_b, sigma_a, sigma_b = _checked_moments(mu_a, sigma_a, mu_b, sigma_b)
    trace_sqrt_product = float(np.sqrt(np.clip(np.linalg.eigvalsh(_sandwich(sigma_a, sigma_b)), 0.0, None)).sum())
    distance = float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt_product)
    return max(distance, 0.0)


def _sandwich(sigma_a: np.ndarray, sigma_b: np.ndarray) -> np.ndarray:
    """S Σb S with S = Σa^½, symmetrised against round-off; its eigenvalues are those of Σa Σb."""
    eigenvalues, eigenvectors = np.linalg.eigh(sigma_a)
    sqrt_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T  # (D, D)
    product = sqrt_a @ sigma_b @ sqrt_a
    return (product + product.T) / 2.0


def _checked_moments(mu_a, sigma_a, mu_b, sigma_b) -> tuple[np.ndarray, ...]:
    """The four moments as float64 arrays, after checking shapes (D,), (D, D) and finiteness."""
    arrays = [np.asarray(value, dtype=np.float64) for value in (mu_a, mu_b, sigma_a, sigma_b)]
    for name, array in zip(("mu_a", "mu_b", "sigma_a", "sigma_b"), arrays):
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    mu_a, mu_b, sigma_a, sigma_b = arrays
    if mu_a.ndim != 1 or mu_b.ndim != 1:
        raise ValueError(f"mu_a and mu_b must be vectors (D,), got shapes {mu_a.shape} and {mu_b.shape}")
    dim = mu_a.shape[0]
    _check_same_dim(dim, mu_b.shape[0])
    for name, sigma in (("sigma_a", sigma_a), ("sigma_b", sigma_b)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} must be a ({dim}, {dim}) covariance to match the means, got shape {sigma.shape}")
    return mu_a, mu_b, sigma_a, sigma_b


# ---------------------------------------------------------------------------------------------------------------
# Kernel distance (KID)
# ---------------------------------------------------------------------------------------------------------------


def kernel_distance(features_a, features_b, num_subsets: int = DEFAULT_KID_SUBSETS,
                    subset_size: int = DEFAULT_KID_SUBSET_SIZE, seed: int = 0) -> dict:  # fmt: skip
    """
    Kernel distance (KID, Bińkowski et al. 2018, "Demystifying MMD GANs", §4 and Appendix A): the unbiased MMD²
    estimate with the cubic polynomial kernel k(x, y) = (x·y / D + 1)³, averaged over random subsets.

    Each of `num_subsets` rounds draws `subset_size` rows of each set without replacement (a seeded numpy
    `Generator`) and computes, with m = subset_size,
    MMD²ᵤ = Σ_{i≠j} k(aᵢ, aⱼ) / (m(m−1)) + Σ_{i≠j} k(bᵢ, bⱼ) / (m(m−1)) − 2 Σ_{i,j} k(aᵢ, bⱼ) / m².

    Args:
        features_a, features_b (`np.ndarray` or `torch.Tensor` of shape `(N, D)`): the two feature sets.
        num_subsets (`int`): rounds to average.
        subset_size (`int`): rows drawn per round, capped at the smaller set's size (>= 2).
        seed (`int`): seed of the subset draws; the same seed gives the same result.

    Returns:
        `dict` with `mean` (the KID; near 0, possibly slightly negative, when both sets come from one distribution)
        and `std` (the population standard deviation over the rounds).
    """
    a, b = _as_float64(features_a, "features_a"), _as_float64(features_b, "features_b")
    _check_same_dim(a.shape[1], b.shape[1])
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"kernel_distance needs num_subsets >= 1 and subset_size >= 2, got {num_subsets} and "
                         f"{subset_size}")  # fmt: skip
    size = min(subset_size, a.shape[0], b.shape[0])
    generator = np.random.default_rng(seed)
    estimates = []
    for _ in range(num_subsets):
        rows_a = generator.choice(a.shape[0], size, replace=False)
        rows_b = generator.choice(b.shape[0], size, replace=False)
        estimates.append(_unbiased_mmd2(a[rows_a], b[rows_b]))
    return {"mean": float(np.mean(estimates)), "std": float(np.std(estimates))}


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x·y / D + 1)³ for every pair of rows: (m, D), (n, D) -> (m, n)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _unbiased_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """The unbiased MMD² estimate of two equally sized samples (m, D) (Bińkowski et al. 2018, eq. 4)."""
    m = a.shape[0]
    k_aa, k_bb, k_ab = _cubic_kernel(a, a), _cubic_kernel(b, b), _cubic_kernel(a, b)
    within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within - 2.0 * k_ab.mean())


# ---------------------------------------------------------------------------------------------------------------
# Improved precision and recall
# ---------------------------------------------------------------------------------------------------------------


def precision_recall(real_features, fake_features, k: int = 3, batch_size: int = DEFAULT_DISTANCE_BLOCK) -> dict:
    """
    Improved precision and recall (Kynkäänniemi et al. 2019, §2, eqs. 1–2) of generated features against real ones.

    Each set's manifold is the union of balls around its points, each ball's radius the Euclidean distance to the
    point's k-th nearest neighbour in the same set (the point itself excluded). Precision is the fraction of fake
    points inside the real manifold (are the samples realistic?); recall the fraction of real points inside the
    fake manifold (do the samples cover the real data?). A point on a ball's boundary counts as inside.

    Args:
        real_features, fake_features (`np.ndarray` or `torch.Tensor` of shape `(N, D)`): the two feature sets; a
            tensor is used on its device. Distances are computed in float32 with `torch.cdist`.
        k (`int`): the neighbour that sets the radii (the paper uses 3); each set needs more than k points.
        batch_size (`int`): rows and columns of one block of pairwise distances, so memory stays
            O(batch_size²) whatever the set sizes.

    Returns:
        `dict` with `precision` and `recall`, both in [0, 1].
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    real = _as_float32_tensor(real_features, "real_features")
    fake = _as_float32_tensor(fake_features, "fake_features").to(real.device)
    _check_same_dim(real.shape[1], fake.shape[1])
    if k >= min(real.shape[0], fake.shape[0]):
        raise ValueError(f"k={k} needs more than k points in each set, got {real.shape[0]} real and "
                         f"{fake.shape[0]} fake; lower k or pass more samples")  # fmt: skip
    real_radii, fake_radii = _kth_neighbour_radii(real, k, batch_size), _kth_neighbour_radii(fake, k, batch_size)
    precision = _inside_manifold(fake, real, real_radii, batch_size).float().mean()
    recall = _inside_manifold(real, fake, fake_radii, batch_size).float().mean()
    return {"precision": float(precision), "recall": float(recall)}


def _kth_neighbour_radii(points: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """(N, D) -> (N,): each point's distance to its k-th nearest other point, block by block.

    A point's own distance 0 is the smallest in its row, so the k-th neighbour is the (k+1)-th smallest distance;
    the k+1 smallest seen so far are kept per row while the column blocks stream past.
    """
    radii = []
    for rows in points.split(batch_size):
        smallest = None  # (rows, <= k+1)
        for columns in points.split(batch_size):
            candidates = torch.cdist(rows, columns)
            if smallest is not None:
                candidates = torch.cat([smallest, candidates], dim=1)
            smallest = candidates.topk(min(k + 1, candidates.shape[1]), dim=1, largest=False).values
        radii.append(smallest[:, k])
    return torch.cat(radii)


def _inside_manifold(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(Q, D) -> (Q,) booleans: whether each query lies within radii[j] of some points[j]."""
    inside = []
    for rows in queries.split(batch_size):
        hit = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
        for columns, column_radii in zip(points.split(batch_size), radii.split(batch_size)):
            hit |= (torch.cdist(rows, columns) <= column_radii[None]).any(dim=1)
        inside.append(hit)
    return torch.cat(inside)


# ---------------------------------------------------------------------------------------------------------------
# All feature-space metrics at once
# ---------------------------------------------------------------------------------------------------------------


def compare(real_features, fake_features, *, k: int = 3, kid_subsets: int = DEFAULT_KID_SUBSETS,
            kid_subset_size: int = DEFAULT_KID_SUBSET_SIZE, seed: int = 0) -> dict:  # fmt: skip
    """
    Every feature-space metric of this module for one pair of feature sets `(N, D)`.

    Returns:
        `dict` with `fd` (`frechet_distance`, Heusel et al. 2017), `kid_mean` and `kid_std` (`kernel_distance`,
        Bińkowski et al. 2018) and `precision` and `recall` (`precision_recall`, Kynkäänniemi et al. 2019).
        Label them with the feature network's name (`FeatureNetwork.metric_label`): they are not Inception scores
        unless the features are Inception-v3's.
    """
    kid = kernel_distance(real_features, fake_features, num_subsets=kid_subsets, subset_size=kid_subset_size,
                          seed=seed)  # fmt: skip
    return {"fd": frechet_distance(real_features, fake_features), "kid_mean": kid["mean"], "kid_std": kid["std"],
            **precision_recall(real_features, fake_features, k=k)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Feature network
# ---------------------------------------------------------------------------------------------------------------


def _short_name(name_or_path: str) -> str:
    """A local folder's own name (`outputs/mnist-classifier` -> `mnist-classifier`); a Hub id as it is."""
    return Path(name_or_path).name if os.path.isdir(name_or_path) else str(name_or_path)


def _network_name(model: PreTrainedModel) -> str:
    """The folder name or Hub id the model was loaded from, else its config's `model_type`."""
    name_or_path = getattr(model.config, "_name_or_path", "") or ""
    return _short_name(name_or_path) if name_or_path else model.config.model_type


def _pool_hidden_state(hidden: torch.Tensor) -> torch.Tensor:
    """A last hidden state -> (B, D): (B, C, H, W) averaged over H, W; (B, T, D) its first (class) token; (B, D)."""
    if hidden.ndim == 4:
        return hidden.mean(dim=(2, 3))
    if hidden.ndim == 3:
        return hidden[:, 0]
    if hidden.ndim == 2:
        return hidden
    raise ValueError(f"cannot pool a hidden state of shape {tuple(hidden.shape)} into (batch, features)")


class FeatureNetwork:
    """
    Images in [0, 1] `(B, C, H, W)` -> the penultimate features of a transformers image classifier, for the
    feature-space metrics of this module.

    The features are the pooled representation the classification head reads:
    1. the base model's `pooler_output`, flattened, when it has one (ResNet: the global average pool of the last
       stage; ConvNeXt, Swin, BEiT likewise);
    2. else the base model's `last_hidden_state`: global-average-pooled when it is a feature map (B, C, H, W), its
       first (class) token when it is a sequence (B, T, D) (what ViT's and DeiT's heads read), as is when (B, D);
    3. a model without a separate base model: the last of `output_hidden_states=True`, pooled as in 2.

    Preprocessing (resize, channel matching, normalisation from the model's `preprocessor_config.json`) is the
    `ClassifierJudge`'s, with torch ops.

    Args:
        classifier: a folder or Hub id (`AutoModelForImageClassification.from_pretrained`, safetensors, with its
            processor settings), a loaded model (used without resize or normalisation), or a `ClassifierJudge`
            (its preprocessing is used).
        name: the label of the results, `"FD (<name> features)"`; default: the folder's name, the Hub id, or the
            config's `model_type`.
    """

    def __init__(self, classifier: str | os.PathLike | PreTrainedModel | ClassifierJudge, name: str | None = None):
        if isinstance(classifier, (str, os.PathLike)):
            self.judge, default_name = ClassifierJudge.from_pretrained(str(classifier)), _short_name(str(classifier))
        elif isinstance(classifier, ClassifierJudge):
            self.judge, default_name = classifier, _network_name(classifier.model)
        else:
            self.judge, default_name = ClassifierJudge(classifier), _network_name(classifier)
        self.name = name or default_name

    @property
    def model(self) -> PreTrainedModel:
        return self.judge.model

    def metric_label(self, metric: str = "FD") -> str:
        """How to report a metric on these features, e.g. `"FD (resnet-50 features)"` (never plain "FID")."""
        return f"{metric} ({self.name} features)"

    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Images in [0, 1] `(N, C, H, W)` -> features `(N, D)` in float32 on the CPU, in eval mode, no grad."""
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must be a non-empty (N, C, H, W) batch in [0, 1], got {tuple(images.shape)}")
        device = next(self.model.parameters()).device
        with eval_mode(self.model):
            batches = [self._penultimate(self.judge.preprocess(batch).to(device)) for batch in images.split(batch_size)]
        return torch.cat([batch.float().cpu() for batch in batches])

    def _penultimate(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels (B, C, H, W) -> the head's input (B, D); see the class docstring for the rules."""
        base = self.model.base_model
        if base is self.model:
            hidden_states = self.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states
            return _pool_hidden_state(hidden_states[-1])
        outputs = base(pixel_values=pixel_values)
        pooled = getattr(outputs, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else _pool_hidden_state(outputs.last_hidden_state)


# ---------------------------------------------------------------------------------------------------------------
# Classification accuracy score (CAS)
# ---------------------------------------------------------------------------------------------------------------


def classification_accuracy_score(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                                  test_labels: torch.Tensor, *, build_model: Callable[[], PreTrainedModel],
                                  steps: int, batch_size: int, learning_rate: float, seed: int,
                                  progress: bool = False) -> float:  # fmt: skip
    """
    Classification accuracy score (Ravuri & Vinyals 2019, §3): train a fresh classifier on the given images only
    (for CAS, generated images labelled with the class they were conditioned on), then report its top-1 accuracy
    on the test images (real, held-out ones). Training on real images instead gives the reference to compare with.

    The classifier `build_model()` is trained with AdamW for `steps` steps of `batch_size` images, reshuffled
    every epoch; the seed fixes the initial weights, the shuffling and any dropout, without touching the global
    random state, so one seed gives one score.

    Args:
        train_images, test_images (`torch.Tensor` of shape `(N, C, H, W)`): images in [0, 1]; the classifier sees
            them mapped to [-1, 1] (`pixel_values = 2 x − 1`).
        train_labels, test_labels (`torch.LongTensor` of shape `(N,)`): class indices.
        build_model: returns a fresh transformers image classifier (forward `pixel_values` -> `.logits`); it is
            trained on the device of its parameters.
        steps, batch_size, learning_rate, seed: the training schedule.
        progress: show a tqdm bar over the steps.

    Returns:
        `float`: the fraction of test images classified correctly, in [0, 1].
    """
    _check_labelled_images(train_images, train_labels, "train")
    _check_labelled_images(test_images, test_labels, "test")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model()
        _train_classifier(model, train_images, train_labels, steps=steps, batch_size=batch_size,
                          learning_rate=learning_rate, seed=seed, progress=progress)  # fmt: skip
    return _top1_accuracy(model, test_images, test_labels, batch_size)


def _check_labelled_images(images: torch.Tensor, labels: torch.Tensor, split: str) -> None:
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"{split}_images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{split}_labels must be (N,) with one label per image ({images.shape[0]}), got shape "
                         f"{tuple(labels.shape)}")  # fmt: skip


def _shuffled_batches(num_items: int, batch_size: int, generator: torch.Generator):
    """Endless index batches: a fresh permutation per epoch, the last short batch of each epoch kept."""
    while True:
        yield from torch.randperm(num_items, generator=generator).split(batch_size)


def _train_classifier(model: PreTrainedModel, images: torch.Tensor, labels: torch.Tensor, *, steps: int,
                      batch_size: int, learning_rate: float, seed: int, progress: bool) -> None:  # fmt: skip
    """`steps` AdamW steps of cross-entropy on images in [0, 1] shown as [-1, 1], in a seeded order."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    batches = _shuffled_batches(images.shape[0], batch_size, torch.Generator().manual_seed(seed))
    model.train()
    for _, indices in zip(tqdm(range(steps), desc="CAS classifier", disable=not progress), batches):
        pixel_values = (images[indices].float() * 2.0 - 1.0).to(device)
        loss = F.cross_entropy(model(pixel_values=pixel_values).logits, labels[indices].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _top1_accuracy(model: PreTrainedModel, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """The fraction of images whose arg-max logit is their label (eval mode, no grad)."""
    device = next(model.parameters()).device
    correct = 0
    with eval_mode(model):
        for batch, batch_labels in zip(images.split(batch_size), labels.split(batch_size)):
            predictions = model(pixel_values=(batch.float() * 2.0 - 1.0).to(device)).logits.argmax(dim=-1)
            correct += int((predictions.cpu() == batch_labels.cpu()).sum())
    return correct / images.shape[0]


__all__ = [
    "FeatureNetwork",
    "classification_accuracy_score",
    "compare",
    "frechet_distance",
    "frechet_distance_from_moments",
    "kernel_distance",
    "precision_recall",
]
