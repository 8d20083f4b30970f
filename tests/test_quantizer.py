import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVectorQuantizer
from safetensors.torch import load_file, save_file

from hf_vqvae import VectorQuantizer


def test_indices_and_loss_equal_diffusers_legacy_false():
    torch.manual_seed(0)
    ours = VectorQuantizer(64, 8, beta=0.25).train()
    theirs = DiffusersVectorQuantizer(64, 8, beta=0.25, legacy=False).train()
    with torch.no_grad():
        ours.codebook.normal_()
        theirs.embedding.weight.copy_(ours.codebook)
    latents = torch.randn(4, 8, 6, 5)
    out = ours(latents)
    z_q, loss, (_, _, indices) = theirs(latents)
    assert torch.equal(out.indices.flatten(), indices.flatten())
    assert torch.allclose(out.loss, loss, rtol=1e-6, atol=1e-7)
    assert torch.allclose(out.quantized, z_q, atol=1e-6)
    # The same gradients, for the encoder output and for the codebook.
    latents_ours = latents.clone().requires_grad_(True)
    latents_theirs = latents.clone().requires_grad_(True)
    out = ours(latents_ours)
    (out.quantized.square().sum() + out.loss).backward()
    z_q, loss, _ = theirs(latents_theirs)
    (z_q.square().sum() + loss).backward()
    assert torch.allclose(latents_ours.grad, latents_theirs.grad, atol=1e-6)
    assert torch.allclose(ours.codebook.grad, theirs.embedding.weight.grad, atol=1e-6)


def test_quantized_values_are_the_code_vectors_and_indices_the_nearest():
    quantizer = VectorQuantizer(16, 4).eval()
    latents = torch.randn(3, 4, 5, 7)
    out = quantizer(latents)
    flat = latents.movedim(1, -1).reshape(-1, 4)
    brute = torch.cdist(flat.double(), quantizer.codebook.double()).argmin(dim=1)
    assert torch.equal(out.indices.flatten(), brute)
    assert torch.equal(out.quantized, quantizer.codebook[out.indices].movedim(-1, 1))
    assert out.usage.sum() == 3 * 5 * 7 and torch.equal(out.usage, torch.bincount(brute, minlength=16))


def test_straight_through_gradient_and_commitment_gradient():
    quantizer = VectorQuantizer(16, 4, beta=0.25, ema_decay=0.99).train()
    latents = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = quantizer(latents)
    upstream = torch.randn_like(latents)
    (out.quantized * upstream).sum().backward()
    assert torch.equal(latents.grad, upstream), "straight-through: the decoder's gradient reaches z_e unchanged"
    latents.grad = None
    codebook = quantizer.codebook.detach().clone()  # the EMA update of this forward comes after quantizing
    out = quantizer(latents)
    out.loss.backward()
    codes = codebook[out.indices].movedim(-1, 1)
    # EMA variant: loss = beta * mean((z_e - e)^2), so d/dz_e = beta * 2 (z_e - e) / numel
    assert torch.allclose(latents.grad, 0.25 * 2 * (latents - codes).detach() / latents.numel(), atol=1e-7)
    assert quantizer.codebook.grad is None and out.codebook_loss.item() == 0.0


def _ema_by_hand(codebook, cluster_size, embed_sum, flat, decay, eps, correction=1.0):
    """Appendix A.1 with Laplace smoothing, written out term by term."""
    num_codes = codebook.shape[0]
    assign = torch.cdist(flat, codebook).argmin(dim=1)
    n = torch.tensor([(assign == i).sum() for i in range(num_codes)], dtype=torch.float32)
    sums = torch.stack([flat[assign == i].sum(dim=0) for i in range(num_codes)])
    new_size = decay * cluster_size + (1 - decay) * n
    new_sum = decay * embed_sum + (1 - decay) * sums
    size, total_sum = new_size / correction, new_sum / correction
    total = size.sum()
    smoothed = (size + eps) / (total + num_codes * eps) * total
    return new_size, new_sum, total_sum / smoothed[:, None]


@pytest.mark.parametrize("bias_correction", [False, True])
def test_ema_update_equals_the_appendix_formula(bias_correction):
    decay, eps = 0.9, 1e-5
    quantizer = VectorQuantizer(6, 3, ema_decay=decay, ema_epsilon=eps, ema_bias_correction=bias_correction).train()
    with torch.no_grad():
        quantizer.codebook.normal_()
        quantizer.ema_embed_sum.copy_(quantizer.codebook * quantizer.ema_cluster_size[:, None])
    size, total = quantizer.ema_cluster_size.clone(), quantizer.ema_embed_sum.clone()
    assert torch.equal(size, torch.zeros(6) if bias_correction else torch.ones(6))
    for step in (1, 2):
        latents = torch.randn(2, 3, 4, 4)
        flat = latents.movedim(1, -1).reshape(-1, 3)
        correction = 1 - decay**step if bias_correction else 1.0
        size, total, codebook = _ema_by_hand(quantizer.codebook.detach().clone(), size, total, flat, decay, eps, correction)
        before = quantizer.codebook.detach().clone()
        out = quantizer(latents)
        assert torch.equal(out.quantized, before[out.indices].movedim(-1, 1)), "forward uses the codes before the update"
        assert torch.allclose(quantizer.ema_cluster_size, size, atol=1e-6)
        assert torch.allclose(quantizer.ema_embed_sum, total, atol=1e-6)
        assert torch.allclose(quantizer.codebook, codebook, atol=1e-5)
        assert int(quantizer.ema_steps) == step


def test_eval_mode_leaves_codebook_and_statistics_untouched():
    quantizer = VectorQuantizer(8, 2, ema_decay=0.99, dead_code_threshold=1).eval()
    state = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer(torch.randn(2, 2, 4, 4))
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_float32_under_bfloat16_autocast():
    quantizer = VectorQuantizer(32, 8, ema_decay=0.99).train()
    latents = torch.randn(2, 8, 4, 4)
    reference = quantizer.nearest_code(latents.movedim(1, -1).reshape(-1, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(latents)
    assert out.quantized.dtype == torch.float32 and out.loss.dtype == torch.float32
    assert torch.equal(out.indices.flatten(), reference)
    assert quantizer.codebook.dtype == torch.float32 and quantizer.ema_embed_sum.dtype == torch.float32


def test_kmeans_init_finds_the_clusters_once():
    torch.manual_seed(0)
    centers = torch.randn(4, 2) * 10
    points = centers.repeat_interleave(50, dim=0) + 0.01 * torch.randn(200, 2)
    latents = points.reshape(2, 10, 10, 2).movedim(-1, 1)
    quantizer = VectorQuantizer(4, 2, kmeans_init=True, ema_decay=0.99).train()
    assert not bool(quantizer.initialized)
    quantizer(latents)
    assert bool(quantizer.initialized)
    distances = torch.cdist(centers, quantizer.codebook.detach())
    assert distances.min(dim=1).values.max() < 0.1, "every cluster centre got a code"
    assert sorted(quantizer.ema_cluster_size.tolist()) == [50.0] * 4, "EMA statistics start from the clusters"
    snapshot = quantizer.codebook.detach().clone()
    quantizer(latents)
    # No second k-means (which would re-seed and reorder the codes): every code stays at its centre.
    assert (quantizer.codebook - snapshot).abs().max() < 1e-4


def test_dead_codes_restart_from_encoder_outputs():
    quantizer = VectorQuantizer(4, 2, dead_code_threshold=2, ema_decay=0.99).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0], [-100.0, 100.0]]))
        quantizer.ema_embed_sum.copy_(quantizer.codebook)
    latents = torch.rand(1, 2, 4, 4)  # all near codes 0 and 1
    flat = latents.movedim(1, -1).reshape(-1, 2)
    quantizer(latents)
    assert quantizer.steps_since_used.tolist()[2:] == [1, 1]
    quantizer(latents)  # second unused step: codes 2 and 3 restart from rows of this batch
    for code in quantizer.codebook.detach()[2:]:
        assert (flat - code).abs().sum(dim=1).min() < 1e-6
    assert quantizer.steps_since_used.tolist()[2:] == [0, 0]
    assert torch.equal(quantizer.ema_cluster_size[2:], torch.ones(2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_embeddings=0, embedding_dim=4), "num_embeddings"),
        (dict(num_embeddings=8, embedding_dim=0), "embedding_dim"),
        (dict(num_embeddings=8, embedding_dim=4, beta=-0.1), "beta"),
        (dict(num_embeddings=8, embedding_dim=4, ema_decay=1.0), "ema_decay"),
        (dict(num_embeddings=8, embedding_dim=4, ema_decay=0.0), "ema_decay"),
        (dict(num_embeddings=8, embedding_dim=4, dead_code_threshold=0), "dead_code_threshold"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(**kwargs)


def test_bad_inputs_are_refused():
    quantizer = VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match="expects \\(batch, 4"):
        quantizer(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 8\)"):
        quantizer.embed(torch.tensor([[0, 8]]))
    with pytest.raises(ValueError, match="integer"):
        quantizer.embed(torch.zeros(1, 2))


def _distributed_worker(rank, world_size, store, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    torch.manual_seed(0)  # same initial codebook on every rank
    quantizer = VectorQuantizer(8, 3, ema_decay=0.9).train()
    latents = torch.randn(2 * world_size, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    quantizer(latents[2 * rank : 2 * rank + 2])
    save_file({k: v.contiguous() for k, v in quantizer.state_dict().items()}, f"{out_dir}/rank{rank}.safetensors")
    dist.destroy_process_group()


def test_ema_statistics_are_all_reduced_across_processes(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    torch.manual_seed(0)
    single = VectorQuantizer(8, 3, ema_decay=0.9).train()
    single(torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(7)))
    for key, value in single.state_dict().items():
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between ranks"
        assert torch.allclose(rank0[key].float(), value.float(), atol=1e-6), f"{key}: two ranks != one process"
