"""DeepMind Sonnet's `vqvae_example.ipynb` re-implemented in plain PyTorch, trained on this project's CIFAR-10.

Why: Sonnet's notebook reports a code perplexity of about 330 per batch of 32 after 10,000 steps, and the library's
`cifar10` VQ-VAE reaches about 316 on the same measure (README, "VQ-VAE `cifar10` against DeepMind Sonnet's
example"). This script runs Sonnet's recipe itself on the data this project has (`../shared/datasets/cifar10_jpeg`:
CIFAR-10 stored as JPEG), so that the gap can be split into what the data does and what the library does. It shares
nothing with `hf_vqvae`'s models: the network, its initialisation and the EMA quantizer are written here from the
notebook and Sonnet 2's `VectorQuantizerEMA`; only the image decoding and the perplexity of a histogram are the
project's.

The recipe (each piece can be swapped for the library's with a flag, to find which piece moves the perplexity):

* data: `--train_images` (40,000: Sonnet trains on `data_batch_1..4`) training images drawn at random (the files
  are sorted by label) in [-0.5, 0.5],
  a fresh random order every epoch, batch 32, no augmentation (`--input_scale 2` gives the library's [-1, 1]);
* network: encoder 4x4/2 (64) - 4x4/2 (128) - 3x3 (128) - 2 residual layers (ReLU, 3x3 to 32, ReLU, 1x1 to 128,
  add; a final ReLU), a 1x1 convolution to D = 64; decoder 3x3 (128) - the same residual stack - 4x4/2 transposed
  (64) - ReLU - 4x4/2 transposed (3). Sonnet's initialisation: weights TruncatedNormal(0, 1/sqrt(fan_in)) cut at
  two standard deviations, zero biases (`--init torch` keeps PyTorch's defaults);
* quantizer: Sonnet 2's `VectorQuantizerEMA`, K = 512, D = 64, decay 0.99, epsilon 1e-5, commitment cost 0.25,
  codebook drawn uniform in +-sqrt(3/D), zero-debiased EMA statistics that start at zero (`--quantizer library`
  puts the library's `VectorQuantizer` with its defaults in its place: EMA, k-means start, dead-code restarts);
* loss: MSE / variance of the training pixels + commitment (`--loss mse` drops the division, as the library does);
* Adam, learning rate 3e-4, constant, no gradient clipping (`--max_grad_norm 1` clips as the library does).

Reported per run: Sonnet's printed figures, the reconstruction error and the perplexity of the training batches
averaged over the last 100 steps, and on the test images the normalised MSE, the perplexity per batch of 32 over
random batches and over batches in file order (one class after another: lower), and the perplexity of the whole
test set.

Usage:

    python benchmarks/sonnet_replica.py --json sonnet.json                       # Sonnet's recipe, 10,000 steps
    python benchmarks/sonnet_replica.py --quantizer library --json lib.json      # with the library's quantizer
    python benchmarks/sonnet_replica.py --quick                                  # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hf_vqvae.data import DataArguments, ImageTransform, batches_for_rank, load_image_splits
from hf_vqvae.evaluation import histogram_perplexity
from hf_vqvae.models.vqvae.quantizer import VectorQuantizer

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


# ----------------------------------------------------------------------------------------------------------------
# Sonnet's network
# ----------------------------------------------------------------------------------------------------------------


class ResidualStack(nn.Module):
    def __init__(self, hidden: int, layers: int, residual_hidden: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([nn.Conv2d(hidden, residual_hidden, 3, padding=1), nn.Conv2d(residual_hidden, hidden, 1)])
            for _ in range(layers)
        )

    def forward(self, h):
        for conv3, conv1 in self.layers:
            h = h + conv1(F.relu(conv3(F.relu(h))))
        return F.relu(h)


class SonnetVQVAE(nn.Module):
    def __init__(self, quantizer: nn.Module, hidden=128, residual_hidden=32, residual_layers=2, embedding_dim=64):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            ResidualStack(hidden, residual_layers, residual_hidden),
            nn.Conv2d(hidden, embedding_dim, 1),
        )  # fmt: skip
        self.quantizer = quantizer
        self.decoder = nn.Sequential(
            nn.Conv2d(embedding_dim, hidden, 3, padding=1),
            ResidualStack(hidden, residual_layers, residual_hidden),
            nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(hidden // 2, 3, 4, stride=2, padding=1),
        )  # fmt: skip

    def forward(self, x):
        quantized, vq_loss, indices = self.quantizer(self.encoder(x))
        return self.decoder(quantized), vq_loss, indices


def sonnet_initialisation_(model: nn.Module) -> None:
    """Sonnet 2's Conv2D / Conv2DTranspose defaults: TruncatedNormal(stddev=1/sqrt(fan_in)) at 2 sd, zero bias."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            in_channels = module.in_channels
            fan_in = in_channels * math.prod(module.kernel_size)
            std = 1.0 / math.sqrt(fan_in)
            nn.init.trunc_normal_(module.weight, 0.0, std, -2 * std, 2 * std)
            nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------------------------
# Quantizers: Sonnet 2's VectorQuantizerEMA, and the library's behind the same interface
# ----------------------------------------------------------------------------------------------------------------


class SonnetVectorQuantizerEMA(nn.Module):
    """Nearest code, straight-through gradient, loss = commitment_cost * ||z_e - sg(e)||^2, and in training the
    codebook set to EMA(sum of assigned z_e) / smoothed EMA(counts), both zero-debiased EMAs that start at zero."""

    def __init__(self, num_embeddings=512, embedding_dim=64, commitment_cost=0.25, decay=0.99, epsilon=1e-5):
        super().__init__()
        self.num_embeddings, self.commitment_cost, self.decay, self.epsilon = num_embeddings, commitment_cost, decay, epsilon
        limit = math.sqrt(3.0 / embedding_dim)  # VarianceScaling(1, fan_in, uniform) of a (D, K) variable
        self.register_buffer("embeddings", torch.empty(num_embeddings, embedding_dim).uniform_(-limit, limit))
        self.register_buffer("hidden_counts", torch.zeros(num_embeddings))
        self.register_buffer("hidden_sums", torch.zeros(num_embeddings, embedding_dim))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, z):
        flat = z.movedim(1, -1).reshape(-1, z.shape[1])
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embeddings.T + self.embeddings.pow(2).sum(1))
        indices = distances.argmin(1)
        quantized = F.embedding(indices, self.embeddings)  # the codes before this step's update
        loss = self.commitment_cost * F.mse_loss(flat, quantized.detach())
        if self.training:
            self._ema_update(flat.detach(), indices)
        quantized = flat + (quantized - flat).detach()
        quantized = quantized.reshape(*z.shape[:1], *z.shape[2:], -1).movedim(-1, 1)
        return quantized, loss, indices.reshape(z.shape[0], *z.shape[2:])

    @torch.no_grad()
    def _ema_update(self, flat, indices):
        self.steps += 1
        one_hot = F.one_hot(indices, self.num_embeddings).to(flat.dtype)
        self.hidden_counts -= (self.hidden_counts - one_hot.sum(0)) * (1 - self.decay)
        self.hidden_sums -= (self.hidden_sums - one_hot.T @ flat) * (1 - self.decay)
        debias = 1 - self.decay ** self.steps.item()
        counts, sums = self.hidden_counts / debias, self.hidden_sums / debias
        total = counts.sum()
        smoothed = (counts + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        self.embeddings.copy_(sums / smoothed[:, None])


class LibraryQuantizer(nn.Module):
    """The library's `VectorQuantizer` with its defaults (as `VQVAEConfig.from_preset("cifar10")` builds it)."""

    def __init__(self, num_embeddings=512, embedding_dim=64):
        super().__init__()
        self.inner = VectorQuantizer(num_embeddings, embedding_dim, beta=0.25, ema_decay=0.99, kmeans_init=True,
                                     dead_code_threshold=20)  # fmt: skip

    def forward(self, z):
        output = self.inner(z)
        return output.quantized, output.loss, output.indices


# ----------------------------------------------------------------------------------------------------------------
# Data and evaluation
# ----------------------------------------------------------------------------------------------------------------


def load_pixels(args) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) uint8 tensors (N, 3, 32, 32), decoded once by the project's pipeline. The files are sorted by
    label, so the `--train_images` training images are a seeded random subset (every class), as Sonnet's
    `data_batch_1..4` are."""
    data = DataArguments(dataset_name=str(Path(args.datasets) / "cifar10_jpeg"), max_eval_samples=args.test_images)
    splits = load_image_splits(data, seed=0)
    transform = ImageTransform(32, 3, (0.0, 255.0))
    out = []
    for split in (splits.train, splits.eval):
        batches = batches_for_rank(split, splits.image_column, transform, batch_size=1000, seed=0, epoch=0,
                                   shuffle=False, drop_last=False)  # fmt: skip
        out.append(torch.cat([b["pixel_values"].round().to(torch.uint8) for b in batches]))
    subset = torch.randperm(len(out[0]), generator=torch.Generator().manual_seed(0))[: args.train_images]
    return out[0][subset], out[1]


def scaled(pixels_uint8: torch.Tensor, input_scale: float) -> torch.Tensor:
    """uint8 -> [-input_scale / 2, input_scale / 2]: [-0.5, 0.5] for 1 (Sonnet), [-1, 1] for 2 (the library)."""
    return (pixels_uint8.float() / 255.0 - 0.5) * input_scale


@torch.no_grad()
def evaluate(model, test: torch.Tensor, input_scale: float, device) -> dict:
    """Test normalised MSE, codes of every test image, and the perplexity per batch of 32 over random batches (as
    Sonnet's training batches are drawn) and over batches in file order (one class after another in these files)."""
    model.eval()
    pixels = scaled(test, input_scale)
    squared, codes = 0.0, []
    for start in range(0, len(test), 500):
        x = pixels[start : start + 500].to(device)
        recon, _, indices = model(x)
        squared += (recon - x).pow(2).sum().item()
        codes.append(indices.flatten(1).cpu())
    model.train()
    codes = torch.cat(codes)  # (N, 64)
    random_order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(0))
    histogram = torch.bincount(codes.flatten(), minlength=512)
    return {"test_normalized_mse": squared / pixels.numel() / pixels.var(unbiased=False).item(),
            "test_batch_perplexity": batch_perplexity(codes[random_order]),
            "test_batch_perplexity_file_order": batch_perplexity(codes),
            "test_perplexity": histogram_perplexity(histogram), "test_codes_used": float((histogram > 0).float().mean()),
            "test_images": len(codes)}  # fmt: skip


def batch_perplexity(codes: torch.Tensor, batch_size: int = 32) -> float:
    """Mean over consecutive batches of `batch_size` images of exp(entropy) of the batch's code histogram."""
    values = [histogram_perplexity(torch.bincount(codes[i : i + batch_size].flatten(), minlength=512))
              for i in range(0, len(codes) - batch_size + 1, batch_size)]  # fmt: skip
    return sum(values) / len(values)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def build(args, device) -> SonnetVQVAE:
    quantizer = SonnetVectorQuantizerEMA() if args.quantizer == "sonnet" else LibraryQuantizer()
    model = SonnetVQVAE(quantizer)
    if args.init == "sonnet":
        sonnet_initialisation_(model)
    return model.to(device)


def train(args, train_pixels: torch.Tensor, test_pixels: torch.Tensor, device) -> dict:
    torch.manual_seed(args.seed)
    model = build(args, device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    data = scaled(train_pixels, args.input_scale).to(device)
    variance = (train_pixels.float() / 255.0).var(unbiased=False).item() * args.input_scale**2
    divisor = variance if args.loss == "sonnet" else 1.0
    generator = torch.Generator().manual_seed(args.seed)
    order, cursor, recon_errors, perplexities = torch.randperm(len(data), generator=generator), 0, [], []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        if cursor + 32 > len(order):
            order, cursor = torch.randperm(len(data), generator=generator), 0
        x = data[order[cursor : cursor + 32].to(device)]
        cursor += 32
        recon, vq_loss, indices = model(x)
        mse = F.mse_loss(recon, x)
        loss = mse / divisor + vq_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        if step > args.steps - 100:  # Sonnet prints the mean of the last 100 steps
            recon_errors.append((mse / variance).item())
            perplexities.append(histogram_perplexity(torch.bincount(indices.flatten(), minlength=512)))
        if step % args.log_every == 0:
            print(f"  step {step}: loss {loss.item():.4f}", flush=True)
    seconds = time.perf_counter() - start
    return {"train_recon_error_last100": sum(recon_errors) / len(recon_errors),
            "train_perplexity_last100": sum(perplexities) / len(perplexities),
            "train_seconds": seconds, "ms_per_step": 1000 * seconds / args.steps,
            **evaluate(model, test_pixels, args.input_scale, device)}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--datasets", default=str(DATASETS), help="folder holding cifar10_jpeg/")
    parser.add_argument("--steps", type=int, default=10000, help="training steps of batch 32")
    parser.add_argument("--train_images", type=int, default=40000, help="training images, a seeded random subset (Sonnet: 40,000)")
    parser.add_argument("--test_images", type=int, default=None, help="test images evaluated (default: all 10,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    parser.add_argument("--quantizer", choices=["sonnet", "library"], default="sonnet")
    parser.add_argument("--init", choices=["sonnet", "torch"], default="sonnet")
    parser.add_argument("--input_scale", type=float, default=1.0, help="pixels span this width: 1 -> [-0.5, 0.5], 2 -> [-1, 1]")
    parser.add_argument("--loss", choices=["sonnet", "mse"], default="sonnet", help="divide the MSE by the variance?")
    parser.add_argument("--max_grad_norm", type=float, default=0.0, help="gradient clipping (0: none, as Sonnet)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log_every", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="smoke run: 120 steps, 256 + 256 images")
    parser.add_argument("--json", metavar="PATH", help="write the runs as JSON")
    args = parser.parse_args(argv)
    if args.steps < 100 or args.train_images < 32 or (args.test_images is not None and args.test_images < 32):
        parser.error("--steps must be >= 100 (the last 100 are averaged), --train_images and --test_images >= 32")
    if args.quick:
        args.steps, args.train_images, args.test_images, args.log_every = 120, 256, 256, 40
    return args


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    if not (Path(args.datasets) / "cifar10_jpeg").is_dir():
        raise SystemExit(f"{Path(args.datasets) / 'cifar10_jpeg'} is absent: this benchmark reads the shared CIFAR-10")
    train_pixels, test_pixels = load_pixels(args)
    settings = {k: getattr(args, k) for k in ("steps", "train_images", "quantizer", "init", "input_scale", "loss",
                                               "max_grad_norm", "device")}  # fmt: skip
    results = {"settings": settings, "train_images_loaded": len(train_pixels), "runs": {}}
    for seed in args.seeds:
        args.seed = seed
        results["runs"][str(seed)] = run = train(args, train_pixels, test_pixels, args.device)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in run.items()), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(parse_args())
