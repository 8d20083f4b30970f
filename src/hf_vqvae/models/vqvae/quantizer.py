"""Vector quantizer of the VQ-VAE (van den Oord et al. 2017, §3.1-3.2 and Appendix A.1).

A leaf block: it takes explicit arguments, not a config, and imports nothing from the rest of the package, so
that it travels with the model folder when a model is saved for `trust_remote_code=True` users.

The training forward has no Python branch on a tensor's value, so `torch.compile` traces it whole (no graph break)
and `torch.export` exports `encode` / `decode_code`: code counts are a `scatter_add_`, dead-code restarts a masked
update of every code, value checks an in-graph assertion when traced (`check_failed`). The one step that is not
traceable, the k-means initialisation on the first training batch, runs eagerly: by the forward in eager mode, or
by `initialize_codebook` (`VQPreTrainedModel.initialize_codebooks`) before the first compiled step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .modeling_helpers import check_failed


@dataclass
class QuantizerOutput(ModelOutput):
    """
    Output of [`VectorQuantizer`].

    Args:
        quantized (`torch.FloatTensor` of shape `(batch, embedding_dim, *spatial)`):
            The nearest codebook vectors, with the straight-through gradient (paper §3.1): their values are the
            codes', their gradient goes to the encoder output unchanged.
        indices (`torch.LongTensor` of shape `(batch, *spatial)`):
            Index of the nearest code for every input vector.
        loss (`torch.FloatTensor` of shape `()`):
            `codebook_loss + beta * commitment_loss` (paper eq. 3 without the reconstruction term).
        codebook_loss (`torch.FloatTensor` of shape `()`):
            `‖sg[z_e] - e‖²` (mean over elements); moves the codes. Zero with EMA updates, which move the codes instead.
        commitment_loss (`torch.FloatTensor` of shape `()`):
            `‖z_e - sg[e]‖²` (mean over elements), not yet multiplied by beta; moves the encoder.
        perplexity (`torch.FloatTensor` of shape `()`):
            `exp(entropy)` of the code histogram of this batch: 1 when one code is used, K when all are used evenly.
        usage (`torch.LongTensor` of shape `(num_embeddings,)`):
            How many input vectors of this batch (summed over processes when distributed) chose each code.
    """

    quantized: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    usage: torch.LongTensor | None = None


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _from_rank_zero(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's `tensor` on every process: a sum all-reduce of it and zeros elsewhere (exact). `dist.all_reduce`
    traces under torch.compile (rewritten into a functional collective); `dist.broadcast` breaks the graph."""
    summed = tensor.clone() if dist.get_rank() == 0 else torch.zeros_like(tensor)
    dist.all_reduce(summed)
    return summed


class VectorQuantizer(nn.Module):
    """
    Nearest-neighbour vector quantizer with a straight-through gradient.

    Args:
        num_embeddings (`int`): codebook size K.
        embedding_dim (`int`): size D of each code vector; the input has D channels.
        beta (`float`, defaults to 0.25): weight of the commitment term (paper eq. 3, "robust from 0.1 to 2.0").
        ema_decay (`float`, *optional*): when set (0.99 in the paper's appendix A.1), the codebook follows an
            exponential moving average of the encoder outputs assigned to each code, instead of the codebook loss.
        ema_epsilon (`float`, defaults to 1e-5): Laplace smoothing of the EMA cluster sizes.
        ema_bias_correction (`bool`, defaults to False): divide the EMA statistics by `1 - decay**t` (zero-debiasing,
            as in Sonnet's `VectorQuantizerEMA`); the statistics then start from zero instead of from the codebook.
        kmeans_init (`bool`, defaults to False): initialise the codebook by k-means (k-means++ seeds) on the first
            training batch. Under `torch.compile`, call `initialize_codebook` before the first compiled step: the
            compiled forward only asserts that it was done.
        kmeans_iters (`int`, defaults to 10): Lloyd iterations of that k-means.
        dead_code_threshold (`int`, *optional*): in training, a code unused for this many consecutive steps is
            replaced by a random encoder output of the current batch (a row drawn for every code at every step, kept
            only for the dead ones: a branch-free update that compiles into the training graph).
        rotation_trick (`bool`, defaults to False): pass gradients to the encoder through a rotation and rescaling
            of z_e onto its code instead of straight through (Fifty et al. 2024, "Restructuring Vector Quantization
            with the Rotation Trick", eq. 4); the forward value is still exactly the code vector.
        use_cosine_sim (`bool`, defaults to False): l2-normalise the encoder outputs and the codes, so the nearest
            code is the one of highest cosine similarity (Yu et al. 2021, ViT-VQGAN §3.2).
        codebook_dim (`int`, *optional*): look codes up in a space of this size: a linear map projects z_e from
            `embedding_dim` down to it and the chosen code back up (ViT-VQGAN's factorised codes). None: no projection.

    The module reads `(batch, embedding_dim, *spatial)` and always computes in float32, also under autocast.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        beta: float = 0.25,
        ema_decay: float | None = None,
        ema_epsilon: float = 1e-5,
        ema_bias_correction: bool = False,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: int | None = None,
        rotation_trick: bool = False,
        use_cosine_sim: bool = False,
        codebook_dim: int | None = None,
    ):
        super().__init__()
        validate_quantizer_args(
            num_embeddings, embedding_dim, beta, ema_decay, ema_epsilon, kmeans_iters, dead_code_threshold, codebook_dim
        )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.beta = beta
        self.ema_decay = ema_decay
        self.ema_epsilon = ema_epsilon
        self.ema_bias_correction = ema_bias_correction
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.rotation_trick = rotation_trick
        self.use_cosine_sim = use_cosine_sim
        self.codebook_dim = codebook_dim or embedding_dim  # d, the size of the space codes are looked up in

        # Factorised codes (ViT-VQGAN): z_e (D) -> lookup space (d) -> code (d) -> decoder input (D).
        self.project_in = nn.Linear(embedding_dim, self.codebook_dim) if self.is_factorised else None
        self.project_out = nn.Linear(self.codebook_dim, embedding_dim) if self.is_factorised else None
        # (K, d); with EMA updates the codebook is not trained by the optimizer.
        self.codebook = nn.Parameter(torch.empty(num_embeddings, self.codebook_dim), requires_grad=not self.use_ema)
        # Every buffer is persistent: saved, loaded and never left uninitialised after `from_pretrained`.
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        if self.use_ema:
            self.register_buffer("ema_cluster_size", torch.empty(num_embeddings))
            self.register_buffer("ema_embed_sum", torch.empty(num_embeddings, self.codebook_dim))
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        if dead_code_threshold is not None:
            self.register_buffer("steps_since_used", torch.zeros(num_embeddings, dtype=torch.long))
        self.reset_parameters()

    @property
    def use_ema(self) -> bool:
        return self.ema_decay is not None

    @property
    def is_factorised(self) -> bool:
        return self.codebook_dim != self.embedding_dim

    @torch.no_grad()
    def reset_parameters(self, keep: frozenset[str] = frozenset()) -> None:
        """(Re)initialise the codebook, its projections, the EMA statistics and the dead-code counters.

        `keep` names this module's own parameters and buffers to leave as they are (those a checkpoint loaded, when
        a fine-tune turns dead-code restarts on or a partial load misses some); EMA statistics that are reset then
        start from the kept codebook.
        """
        if "codebook" not in keep:
            # Uniform(-1/K, 1/K) as in the reference implementations (Sonnet, taming-transformers).
            nn.init.uniform_(self.codebook, -1.0 / self.num_embeddings, 1.0 / self.num_embeddings)
            if self.use_cosine_sim:
                self.codebook.copy_(F.normalize(self.codebook, dim=1))
        if self.is_factorised:
            self.project_in.reset_parameters()
            self.project_out.reset_parameters()
        if "initialized" not in keep:
            self.initialized.fill_(not self.kmeans_init or "codebook" in keep)
        if self.use_ema and not {"ema_steps", "ema_cluster_size", "ema_embed_sum"} <= keep:
            self.ema_steps.zero_()
            # Starting the statistics at (N_i = 1, m_i = e_i) keeps unused codes where they are (e_i = m_i / N_i)
            # instead of letting them drift to m_i / eps; with bias correction they start from zero.
            self.ema_cluster_size.fill_(0.0 if self.ema_bias_correction else 1.0)
            self.ema_embed_sum.copy_(self.codebook * self.ema_cluster_size[:, None])
        if self.dead_code_threshold is not None and "steps_since_used" not in keep:
            self.steps_since_used.zero_()

    # ----------------------------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------------------------

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        if latents.dim() < 2 or latents.shape[1] != self.embedding_dim:
            raise ValueError(
                f"VectorQuantizer expects (batch, {self.embedding_dim}, *spatial) inputs, got shape "
                f"{tuple(latents.shape)}; check the encoder's output channels against embedding_dim."
            )
        with torch.autocast(latents.device.type, enabled=False):
            flat = self._to_lookup_space(latents.float().movedim(1, -1).reshape(-1, self.embedding_dim))  # (N, d)
            if self.training:
                self._initialize_or_assert_initialized(flat.detach())
            codebook = self.lookup_codebook()  # (K, d)
            indices = nearest_code(flat, codebook)  # (N,)
            quantized = F.embedding(indices, codebook)  # (N, d), values before any EMA update of this step
            usage = self._usage(indices)
            if self.training:
                self._training_updates(flat.detach(), indices, usage)
            output = self._losses_and_gradient_estimator(flat, quantized)
            if self.is_factorised:
                output.quantized = self._from_lookup_space(output.quantized)  # (N, D)

        spatial = latents.shape[2:]
        # Back in the input's dtype (a no-op for float32; bf16 for a model cast to bf16), losses stay float32.
        output.quantized = output.quantized.reshape(latents.shape[0], *spatial, -1).movedim(-1, 1).to(latents.dtype)
        output.indices = indices.reshape(latents.shape[0], *spatial)
        output.usage = usage
        output.perplexity = _perplexity(usage)
        return output

    @torch.no_grad()
    def initialize_codebook(self, latents: torch.Tensor) -> bool:
        """k-means-initialise the codebook on `latents` `(batch, embedding_dim, *spatial)` if it still waits for it
        (`kmeans_init=True` and no training step yet); returns whether it did. The eager training forward does this
        on its first batch; a compiled forward cannot (see the module docstring), so call this first."""
        if bool(self.initialized):
            return False
        with torch.autocast(latents.device.type, enabled=False):
            self._kmeans_init(self._to_lookup_space(latents.float().movedim(1, -1).reshape(-1, self.embedding_dim)))
        return True

    @torch.no_grad()
    def nearest_code(self, flat: torch.Tensor) -> torch.LongTensor:
        """Index of the nearest code for each row of `flat` (N, D), the encoder outputs."""
        return nearest_code(self._to_lookup_space(flat.float()), self.lookup_codebook())

    def lookup_codebook(self) -> torch.Tensor:
        """The codes as compared with the encoder outputs, (K, d) in float32: l2-normalised with cosine similarity.

        With cosine similarity both sides have unit norm, so ‖z - e‖² = 2 - 2 z·e: the nearest code is the one of
        largest cosine similarity, and `nearest_code`'s argmin finds it.
        """
        codebook = self.codebook.float()
        return F.normalize(codebook, dim=1) if self.use_cosine_sim else codebook

    def _to_lookup_space(self, flat: torch.Tensor) -> torch.Tensor:
        """Encoder outputs (N, D) -> the lookup space (N, d): projected down and/or l2-normalised."""
        if self.is_factorised:
            flat = F.linear(flat, self.project_in.weight.float(), self.project_in.bias.float())
        return F.normalize(flat, dim=1) if self.use_cosine_sim else flat

    def _from_lookup_space(self, vectors: torch.Tensor) -> torch.Tensor:
        """Code vectors (..., d) -> decoder inputs (..., D) through `project_out`, in float32."""
        return F.linear(vectors, self.project_out.weight.float(), self.project_out.bias.float())

    def embed(self, indices: torch.LongTensor) -> torch.FloatTensor:
        """Code vectors for `indices` of shape `(batch, *spatial)`, returned as `(batch, embedding_dim, *spatial)`."""
        if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"codes must be an integer tensor, got dtype {indices.dtype}")
        in_range = (indices >= 0) & (indices < self.num_embeddings)
        if indices.numel() and check_failed(in_range.all(), f"codes must lie in [0, {self.num_embeddings})"):
            raise ValueError(
                f"codes must lie in [0, {self.num_embeddings}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]; were they made by a model with another codebook size?"
            )
        vectors = F.embedding(indices.long(), self.lookup_codebook())  # (batch, *spatial, d)
        if self.is_factorised:
            vectors = self._from_lookup_space(vectors)  # (batch, *spatial, D)
        return vectors.to(self.codebook.dtype).movedim(-1, 1)

    # ----------------------------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------------------------

    def _losses_and_gradient_estimator(self, flat: torch.Tensor, quantized: torch.Tensor) -> QuantizerOutput:
        # Paper eq. 3: ‖sg[z_e] - e‖² moves the codes, beta ‖z_e - sg[e]‖² moves the encoder.
        estimator = _RotationTrickCommitment if self.rotation_trick else _StraightThroughCommitment
        straight_through, commitment_loss = estimator.apply(flat, quantized.detach())
        if self.use_ema:
            codebook_loss = flat.new_zeros(())
        else:
            codebook_loss = F.mse_loss(quantized, flat.detach())
        return QuantizerOutput(
            quantized=straight_through,
            loss=codebook_loss + self.beta * commitment_loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
        )

    def _initialize_or_assert_initialized(self, flat: torch.Tensor) -> None:
        """Training: k-means on the first batch in eager mode; traced, an in-graph check that it was done before."""
        if torch.compiler.is_compiling():
            torch._assert_async(
                self.initialized,
                "the k-means initialisation of the codebook has not run: call model.initialize_codebooks(pixel_values) "
                "(or VectorQuantizer.initialize_codebook) on a first batch before the first compiled training step",
            )
        elif not bool(self.initialized):
            self._kmeans_init(flat)

    def _usage(self, indices: torch.LongTensor) -> torch.LongTensor:
        # A scatter-add rather than `bincount`, whose output length depends on the values (a graph break).
        usage = torch.zeros(self.num_embeddings, dtype=torch.long, device=indices.device)
        usage.scatter_add_(0, indices, torch.ones_like(indices))
        if self.training and _is_distributed() and not self.use_ema:
            dist.all_reduce(usage)  # the EMA path reduces usage together with its statistics
        return usage

    @torch.no_grad()
    def _training_updates(self, flat: torch.Tensor, indices: torch.LongTensor, usage: torch.LongTensor) -> None:
        if self.use_ema:
            self._ema_update(flat, indices, usage)
        if self.dead_code_threshold is not None:
            self._restart_dead_codes(flat, usage)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.LongTensor, usage: torch.LongTensor) -> None:
        """Appendix A.1: N_i <- γ N_i + (1-γ) n_i ; m_i <- γ m_i + (1-γ) Σ_j z_ij ; e_i = m_i / N_i."""
        counts = usage.float()  # n_i, (K,)
        embed_sum = flat.new_zeros(self.ema_embed_sum.shape).index_add_(0, indices, flat)  # Σ_j z_ij, (K, D)
        if _is_distributed():
            stats = torch.cat([counts[:, None], embed_sum], dim=1)  # one all-reduce for both statistics
            dist.all_reduce(stats)
            counts, embed_sum = stats[:, 0], stats[:, 1:]
            usage.copy_(counts.round().long())
        decay = self.ema_decay
        self.ema_cluster_size.mul_(decay).add_(counts, alpha=1.0 - decay)
        self.ema_embed_sum.mul_(decay).add_(embed_sum, alpha=1.0 - decay)
        self.ema_steps.add_(1)
        cluster_size, embed_sum_avg = self.ema_cluster_size, self.ema_embed_sum
        if self.ema_bias_correction:
            correction = self._bias_correction(self.ema_steps)
            cluster_size, embed_sum_avg = cluster_size / correction, embed_sum_avg / correction
        # Laplace smoothing keeps every N_i > 0 (Sonnet's VectorQuantizerEMA).
        total = cluster_size.sum()
        smoothed = (cluster_size + self.ema_epsilon) / (total + self.num_embeddings * self.ema_epsilon) * total
        codebook = embed_sum_avg / smoothed[:, None]
        self.codebook.data.copy_(F.normalize(codebook, dim=1) if self.use_cosine_sim else codebook)

    def _bias_correction(self, steps: torch.Tensor) -> torch.Tensor:
        """1 - decay**t for the step count `steps` (a 0-d tensor), in float64 as Python would compute it."""
        return 1.0 - torch.pow(self.ema_decay, steps.double())

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor, usage: torch.LongTensor) -> None:
        """Codes unused for `dead_code_threshold` steps move onto random encoder outputs of this batch.

        Branch-free: a candidate row is drawn for every code and kept only where the code is dead, so no Python
        branch depends on how many codes died (torch.compile traces it into the training graph).
        """
        self.steps_since_used.add_(1).masked_fill_(usage > 0, 0)
        dead = self.steps_since_used >= self.dead_code_threshold  # (K,)
        # Random encoder outputs of this batch; rank 0 chooses so every process gets the same codebook.
        choice = torch.randint(0, flat.shape[0], (self.num_embeddings,), device=flat.device)
        replacements = flat[choice]  # (K, d)
        if _is_distributed():
            replacements = _from_rank_zero(replacements)
        vectors = torch.where(dead[:, None], replacements.to(self.codebook.dtype), self.codebook)
        self.codebook.data.copy_(vectors)
        if self.use_ema:
            # A restarted code's statistics start as if it had been chosen once (see `_set_codes`).
            scale = self._bias_correction(self.ema_steps.clamp(min=1)).float() if self.ema_bias_correction else 1.0
            self.ema_cluster_size.copy_(torch.where(dead, scale, self.ema_cluster_size))
            self.ema_embed_sum.copy_(torch.where(dead[:, None], replacements * scale, self.ema_embed_sum))
        self.steps_since_used.masked_fill_(dead, 0)

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """k-means++ seeding, then Lloyd iterations, on the first training batch (rank 0's when distributed).

        A batch with fewer vectors than codes seeds the codebook with its vectors, repeated: the surplus codes then
        go unused and the dead-code restarts, when enabled, move them onto later batches' outputs.
        """
        if flat.shape[0] < self.num_embeddings:
            centroids = flat[torch.arange(self.num_embeddings, device=flat.device) % flat.shape[0]].clone()
            counts = torch.ones(self.num_embeddings, device=flat.device)
        else:
            centroids = _kmeans_plus_plus_seeds(flat, self.num_embeddings)
            for _ in range(self.kmeans_iters):
                assignment = nearest_code(flat, centroids)
                counts = torch.bincount(assignment, minlength=self.num_embeddings).float()
                sums = torch.zeros_like(centroids).index_add_(0, assignment, flat)
                used = counts > 0
                centroids[used] = sums[used] / counts[used, None]
                if self.use_cosine_sim:  # spherical k-means: centroids back on the unit sphere
                    centroids = F.normalize(centroids, dim=1)
        if _is_distributed():
            dist.broadcast(centroids, src=0)
            dist.broadcast(counts, src=0)
        # The EMA statistics start from the clusters found: N_i = cluster size (at least 1), m_i = N_i e_i.
        self._set_codes(torch.arange(self.num_embeddings, device=flat.device), centroids, counts.clamp(min=1.0))
        self.initialized.fill_(True)

    @torch.no_grad()
    def reseed_codes(self, which: torch.LongTensor, encoder_outputs: torch.Tensor) -> None:
        """Move codes `which` onto rows drawn at random from `encoder_outputs` (N, D), e.g. before fine-tuning."""
        flat = self._to_lookup_space(encoder_outputs.float())
        choice = torch.randint(0, flat.shape[0], (which.numel(),), device=flat.device)
        self._set_codes(which, flat[choice])

    @torch.no_grad()
    def _set_codes(self, which: torch.LongTensor, vectors: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Overwrite codes `which` with `vectors`; EMA statistics restart as if each was chosen `counts` times."""
        self.codebook.data[which] = vectors.to(self.codebook.dtype)
        if self.use_ema:
            counts = torch.ones(len(which), device=vectors.device) if counts is None else counts
            # Stored statistics are biased by (1 - decay**t) under bias correction: store them that way too.
            scale = self._bias_correction(self.ema_steps.clamp(min=1)) if self.ema_bias_correction else 1.0
            self.ema_cluster_size[which] = (counts * scale).to(self.ema_cluster_size.dtype)
            self.ema_embed_sum[which] = (vectors * (counts * scale)[:, None]).to(self.ema_embed_sum.dtype)

    def extra_repr(self) -> str:
        mode = f"ema_decay={self.ema_decay}" if self.use_ema else "codebook loss"
        options = [name for name in ("kmeans_init", "rotation_trick", "use_cosine_sim") if getattr(self, name, False)]
        options += [f"codebook_dim={self.codebook_dim}"] if self.is_factorised else []
        options += [f"dead_code_threshold={self.dead_code_threshold}"] if self.dead_code_threshold else []
        return ", ".join([f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, beta={self.beta}",
                          mode, *options])


class _StraightThroughCommitment(torch.autograd.Function):
    """Straight-through quantisation (§3.1) and the commitment loss mean(‖z_e - sg[e]‖²) in one pass.

    Forward returns the code vectors themselves (bit-exact, so `decode_code(codes)` reproduces `forward`) and the
    loss; backward passes the output gradient to z_e unchanged and adds the loss gradient 2 (z_e - e) / numel.
    Equivalent to `z + (e - z).detach()` and `F.mse_loss(z, e.detach())`, with two fewer passes over memory.
    """

    @staticmethod
    def forward(ctx, flat: torch.Tensor, quantized: torch.Tensor):
        difference = (quantized - flat).reshape(-1)  # e - z_e
        ctx.save_for_backward(difference)
        ctx.flat_shape = flat.shape
        loss = torch.dot(difference, difference) / difference.numel()
        return quantized, loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor, grad_loss: torch.Tensor):
        (difference,) = ctx.saved_tensors
        scale = grad_loss * (-2.0 / difference.numel())
        grad_flat = torch.addcmul(grad_output, difference.view(ctx.flat_shape), scale)
        return grad_flat, None


class _RotationTrickCommitment(torch.autograd.Function):
    """The rotation trick (Fifty et al. 2024, eq. 4) and the commitment loss, in one pass.

    The forward value is the code vector e itself (as with straight-through). The encoder output z is treated as
    q = sg[λ R] z, where R rotates z's direction ẑ onto ê and λ = ‖e‖ / ‖z‖ rescales it:
    R = I - 2 r rᵀ + 2 ê ẑᵀ with r = (ẑ + ê) / ‖ẑ + ê‖ (so R z = ‖z‖ ê and λ R z = e). The gradient reaching z is
    therefore λ Rᵀ g = λ (g - 2 r (r·g) + 2 ẑ (ê·g)) instead of g: the decoder's gradient at e, turned back by the
    rotation that took z onto e, so that its angle to z is its angle to e. Computed per row without forming R. The
    commitment gradient 2 (z - e) / numel is added as in `_StraightThroughCommitment`.
    """

    @staticmethod
    def forward(ctx, flat: torch.Tensor, quantized: torch.Tensor):
        difference = quantized - flat  # e - z_e, (N, d)
        ctx.save_for_backward(flat, quantized, difference)
        loss = torch.dot(difference.reshape(-1), difference.reshape(-1)) / difference.numel()
        return quantized, loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor, grad_loss: torch.Tensor):
        flat, quantized, difference = ctx.saved_tensors
        flat_norm = flat.norm(dim=1, keepdim=True).clamp(min=_ROTATION_EPS)  # ‖z‖, (N, 1)
        code_norm = quantized.norm(dim=1, keepdim=True)  # ‖e‖
        flat_unit, code_unit = flat / flat_norm, quantized / code_norm.clamp(min=_ROTATION_EPS)  # ẑ, ê
        reflector = F.normalize(flat_unit + code_unit, dim=1, eps=_ROTATION_EPS)  # r
        rotated = (
            grad_output
            - 2.0 * reflector * (reflector * grad_output).sum(dim=1, keepdim=True)
            + 2.0 * flat_unit * (code_unit * grad_output).sum(dim=1, keepdim=True)
        )  # Rᵀ g
        scale = grad_loss * (-2.0 / difference.numel())
        return torch.addcmul(rotated * (code_norm / flat_norm), difference, scale), None


# Norms below this count as zero in the rotation trick (a zero vector has no direction to rotate).
_ROTATION_EPS = 1e-12


# Rows per distance block: a (4096, K) block stays in cache and its buffer is reused, which on a CPU runs about
# twice as fast as one (N, K) matrix (page faults of a fresh N x K allocation dominate) and bounds memory.
_DISTANCE_CHUNK_ROWS = 4096
# On an accelerator one kernel per block costs a launch: use large blocks there, only to bound memory.
_DISTANCE_CHUNK_ROWS_ACCELERATOR = 65536


@torch.no_grad()
def nearest_code(flat: torch.Tensor, codebook: torch.Tensor) -> torch.LongTensor:
    """argmin_k ‖z - e_k‖² for each row z of `flat` (N, D), against `codebook` (K, D).

    ‖z - e‖² = ‖z‖² - 2 z·e + ‖e‖²; ‖z‖² is the same for every code of a row, so the argmin needs one fused
    `addmm` (‖e‖² - 2 z·eᵀ) per block of rows and an `argmin`. Traced (torch.compile, torch.export), one
    out-of-place `addmm` for all rows: the compiler plans the buffers, and `out=` into views does not export.
    """
    codebook_sq = codebook.pow(2).sum(dim=1)  # (K,)
    if torch.compiler.is_compiling():
        return torch.addmm(codebook_sq, flat, codebook.t(), alpha=-2.0).argmin(dim=1)  # (N,)
    num_rows = flat.shape[0]
    chunk_rows = _DISTANCE_CHUNK_ROWS if flat.device.type == "cpu" else _DISTANCE_CHUNK_ROWS_ACCELERATOR
    indices = torch.empty(num_rows, dtype=torch.long, device=flat.device)
    block = flat.new_empty(min(chunk_rows, num_rows), codebook.shape[0])
    for start in range(0, num_rows, chunk_rows):
        stop = min(start + chunk_rows, num_rows)
        distances = block[: stop - start]
        torch.addmm(codebook_sq, flat[start:stop], codebook.t(), alpha=-2.0, out=distances)  # (rows, K)
        torch.argmin(distances, dim=1, out=indices[start:stop])
    return indices


@torch.no_grad()
def _kmeans_plus_plus_seeds(flat: torch.Tensor, num_seeds: int) -> torch.Tensor:
    """k-means++ (Arthur & Vassilvitskii 2007): each new seed drawn with probability ∝ squared distance."""
    seeds = flat.new_empty(num_seeds, flat.shape[1])
    seeds[0] = flat[torch.randint(0, flat.shape[0], (1,), device=flat.device)]
    closest = (flat - seeds[0]).pow(2).sum(dim=1)  # (N,) squared distance to the nearest seed so far
    for index in range(1, num_seeds):
        weights = closest if closest.sum() > 0 else torch.ones_like(closest)
        seeds[index] = flat[torch.multinomial(weights, 1)]
        closest = torch.minimum(closest, (flat - seeds[index]).pow(2).sum(dim=1))
    return seeds


def _perplexity(usage: torch.LongTensor) -> torch.FloatTensor:
    probs = usage.float() / usage.sum().clamp(min=1)
    # In [1, K]; the clamp removes float rounding above K for an exactly uniform histogram.
    return torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum()).clamp(1.0, float(usage.numel()))


def validate_quantizer_args(
    num_embeddings, embedding_dim, beta, ema_decay, ema_epsilon, kmeans_iters, dead_code_threshold, codebook_dim=None
) -> None:
    """Raise a `ValueError` naming the first out-of-range (or wrongly typed, NaN, infinite) quantizer setting."""
    checks = [
        (_is_int(num_embeddings, 1), f"num_embeddings (codebook size K) must be an integer >= 1, got {num_embeddings!r}"),
        (_is_int(embedding_dim, 1), f"embedding_dim (code size D) must be an integer >= 1, got {embedding_dim!r}"),
        (_is_finite(beta) and beta >= 0,
         f"beta (commitment weight) must be a finite number >= 0, got {beta!r}; the paper uses 0.25"),
        (ema_decay is None or (_is_finite(ema_decay) and 0.0 < ema_decay < 1.0),
         f"ema_decay must lie strictly between 0 and 1 (or be None), got {ema_decay!r}; try 0.99"),
        (_is_finite(ema_epsilon) and ema_epsilon > 0, f"ema_epsilon must be a finite number > 0, got {ema_epsilon!r}"),
        (_is_int(kmeans_iters, 1), f"kmeans_iters must be an integer >= 1, got {kmeans_iters!r}"),
        (dead_code_threshold is None or _is_int(dead_code_threshold, 1),
         f"dead_code_threshold must be an integer >= 1 step (or None), got {dead_code_threshold!r}"),
        (codebook_dim is None or _is_int(codebook_dim, 1),
         f"codebook_dim (lookup size) must be an integer >= 1 (or None), got {codebook_dim!r}"),
    ]  # fmt: skip
    for valid, message in checks:
        if not valid:
            raise ValueError(message)


def _is_int(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def _is_finite(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
