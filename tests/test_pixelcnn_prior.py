"""Gated PixelCNN prior: causality, conditioning, shape-agnosticism, cached == naive sampling, errors."""

import pytest
import torch
import torch.nn.functional as F

from hf_vqvae.models.pixelcnn_prior import PixelCNNPriorConfig, PixelCNNPriorModel, PixelCNNPriorOutput
from hf_vqvae.models.pixelcnn_prior.sampling import IncrementalSampler, filter_logits
from model_mixin import ModelTesterMixin

K, NUM_CLASSES, CONDITION_K = 8, 3, 5


def tiny_config(**overrides):
    """Class-conditional and conditioned on a 2x smaller code map (a tiny VQ-VAE-2 bottom prior)."""
    values = dict(num_embeddings=K, hidden_channels=16, num_layers=3, kernel_size=3, first_kernel_size=5,
                  num_classes=NUM_CLASSES, condition_num_embeddings=CONDITION_K, condition_hidden_channels=8,
                  condition_num_residual_blocks=1, condition_upsample_factor=2, dropout=0.1, code_shape=[6, 6])
    return PixelCNNPriorConfig(**{**values, **overrides})


def attention_config(**overrides):
    """As `tiny_config`, plus two causal self-attention blocks (a tiny VQ-VAE-2 top prior with a condition)."""
    return tiny_config(**{"num_attention_layers": 2, "num_heads": 2, **overrides})


def unconditional_config(**overrides):
    values = dict(num_classes=0, condition_num_embeddings=0, code_shape=None)
    return tiny_config(**{**values, **overrides})


def odd_sizes_config(**overrides):
    """Wider kernels, 18 channels (not a multiple of 4: padded position encoding), 3 heads, no upsampling."""
    values = dict(kernel_size=5, first_kernel_size=7, hidden_channels=18, num_attention_layers=1, num_heads=3,
                  condition_upsample_factor=1, code_shape=None)
    return tiny_config(**{**values, **overrides})


def single_layer_config(**overrides):
    """Only the mask-'A' layer (num_layers=0)."""
    return unconditional_config(**{"num_layers": 0, **overrides})


CONFIGS = {"conditional": tiny_config, "attention": attention_config, "unconditional": unconditional_config,
           "odd-sizes": odd_sizes_config, "single-layer": single_layer_config}  # fmt: skip


def make_model(make=tiny_config, seed=0, **overrides):
    torch.manual_seed(seed)
    return PixelCNNPriorModel(make(**overrides)).eval()


def random_inputs(config, batch=2, height=6, width=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = {"codes": torch.randint(0, config.num_embeddings, (batch, height, width), generator=generator)}
    if config.num_classes:
        inputs["class_labels"] = torch.randint(0, config.num_classes, (batch,), generator=generator)
    if config.condition_num_embeddings:
        factor = config.condition_upsample_factor
        shape = (batch, height // factor, width // factor)
        inputs["condition_codes"] = torch.randint(0, config.condition_num_embeddings, shape, generator=generator)
    return inputs


def logits_of(model, **inputs):
    with torch.no_grad():
        return model(**inputs).logits


# ------------------------------------------------------------------------------------------------------------------
# The shared mixin: class + condition stack used (every parameter gets a gradient), with and without attention
# ------------------------------------------------------------------------------------------------------------------


class _PriorTester(ModelTesterMixin):
    model_class = PixelCNNPriorModel

    def make_inputs(self):
        return random_inputs(self.make_config())

    def outputs_to_compare(self, model, inputs):
        with torch.no_grad():
            output = model(**inputs)
        sample_inputs = {key: value for key, value in inputs.items() if key != "codes"}
        codes = model.sample(2, (6, 6), generator=torch.Generator().manual_seed(3), **sample_inputs)
        return [output.logits, output.loss, codes]

    def expected_shapes(self, config, inputs):
        batch, height, width = inputs["codes"].shape
        return {"logits": (batch, config.num_embeddings, height, width), "loss": ()}


class TestPixelCNNPrior(_PriorTester):
    def make_config(self):
        return tiny_config()


class TestPixelCNNPriorAttention(_PriorTester):
    def make_config(self):
        return attention_config()


class TestPixelCNNPriorUnconditional(_PriorTester):
    def make_config(self):
        return unconditional_config()


def test_output_and_loss_is_the_cross_entropy_in_nats_per_code():
    model = make_model()
    inputs = random_inputs(model.config)
    output = model(**inputs)
    assert isinstance(output, PixelCNNPriorOutput)
    assert output.logits.dtype == torch.float32
    assert torch.allclose(output.loss, F.cross_entropy(output.logits, inputs["codes"]))
    log_probs = output.logits.log_softmax(dim=1).gather(1, inputs["codes"][:, None])  # (B, 1, H, W)
    assert torch.allclose(output.loss, -log_probs.mean())
    loss, logits = model(**inputs, return_dict=False)
    assert torch.equal(loss, output.loss) and torch.equal(logits, output.logits)


# ------------------------------------------------------------------------------------------------------------------
# Causality and receptive field
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["conditional", "attention", "odd-sizes"])
def test_logits_never_see_the_current_or_later_codes(name):
    """For every position p of a 5x5 map: changing the codes at p and after leaves the logits at <= p unchanged."""
    model = make_model(CONFIGS[name], code_shape=None, condition_upsample_factor=1)
    height, width = 5, 5
    inputs = random_inputs(model.config, height=height, width=width, seed=1)
    base = logits_of(model, **inputs).flatten(2)  # (B, K, HW)
    generator = torch.Generator().manual_seed(2)
    changed_somewhere = False
    for position in range(height * width):
        codes = inputs["codes"].flatten(1).clone()  # (B, HW), raster order
        shift = torch.randint(1, K, codes[:, position:].shape, generator=generator)
        codes[:, position:] = (codes[:, position:] + shift) % K  # every code at p and after is different
        perturbed = logits_of(model, **{**inputs, "codes": codes.view(-1, height, width)}).flatten(2)
        assert torch.allclose(perturbed[:, :, : position + 1], base[:, :, : position + 1], rtol=0, atol=1e-6), (
            f"logits at positions <= {position} depend on the code at {position} or later"
        )
        if position + 1 < height * width:
            changed_somewhere |= not torch.allclose(perturbed[:, :, position + 1 :], base[:, :, position + 1 :])
    assert changed_somewhere


@pytest.mark.parametrize("name", ["conditional", "unconditional"])
@pytest.mark.parametrize("earlier", [(2, 1), (2, 0), (1, 2), (1, 0), (1, 3), (1, 4), (0, 0), (0, 4)])
def test_earlier_codes_change_the_logits_with_no_blind_spot(name, earlier):
    """(2, 2) depends on the code to its left, above, and above-right (the blind spot of the original PixelCNN)."""
    model = make_model(CONFIGS[name], code_shape=None, condition_upsample_factor=1)
    inputs = random_inputs(model.config, height=5, width=5, seed=4)
    codes = inputs["codes"].clone()
    codes[:, earlier[0], earlier[1]] = (codes[:, earlier[0], earlier[1]] + 1) % K
    before = logits_of(model, **inputs)[:, :, 2, 2]
    after = logits_of(model, **{**inputs, "codes": codes})[:, :, 2, 2]
    assert (after - before).abs().max() > 1e-4


def test_first_position_depends_only_on_the_conditions():
    model = make_model()
    inputs = random_inputs(model.config)
    other = torch.randint(0, K, inputs["codes"].shape, generator=torch.Generator().manual_seed(9))
    first = logits_of(model, **inputs)[:, :, 0, 0]
    assert torch.allclose(first, logits_of(model, **{**inputs, "codes": other})[:, :, 0, 0], rtol=0, atol=1e-6)


def test_class_labels_and_condition_codes_change_the_logits():
    model = make_model()
    inputs = random_inputs(model.config)
    base = logits_of(model, **inputs)
    other_labels = (inputs["class_labels"] + 1) % NUM_CLASSES
    by_class = logits_of(model, **{**inputs, "class_labels": other_labels})
    assert (by_class - base).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every sample, at its first position too
    assert not torch.allclose(by_class[:, :, 0, 0], base[:, :, 0, 0])
    other_condition = (inputs["condition_codes"] + 1) % CONDITION_K
    by_condition = logits_of(model, **{**inputs, "condition_codes": other_condition})
    assert (by_condition - base).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    # The condition is spatial: changing one top code changes the logits near its 2x2 footprint, not far away.
    local = inputs["condition_codes"].clone()
    # Top code (2, 2) covers rows 4-5 of the 6x6 map; the stack's 3x3 convs (one at each resolution) widen that
    # to rows >= 1, so row 0 (which sees nothing above it) keeps its logits.
    local[:, 2, 2] = (local[:, 2, 2] + 1) % CONDITION_K
    by_local = logits_of(model, **{**inputs, "condition_codes": local})
    assert (by_local - base)[:, :, 4:, 4:].abs().max() > 1e-4
    assert torch.allclose(by_local[:, :, :1], base[:, :, :1], rtol=0, atol=1e-6)
    assert not torch.allclose(by_local[:, :, 1:], base[:, :, 1:], rtol=0, atol=1e-6)


def test_same_weights_run_on_any_map_size():
    model = make_model()
    for height, width in [(6, 6), (4, 10)]:
        inputs = random_inputs(model.config, height=height, width=width)
        output = model(**inputs)
        assert output.logits.shape == (2, K, height, width) and torch.isfinite(output.loss)
    # Without a spatial condition, the logits of a map's first rows are those of the map cut after those rows.
    for make in (unconditional_config, attention_config):
        model = make_model(make, condition_num_embeddings=0)
        inputs = random_inputs(model.config, height=7, width=5)
        full = logits_of(model, **inputs)
        top = logits_of(model, **{**inputs, "codes": inputs["codes"][:, :3]})
        assert torch.allclose(top, full[:, :, :3], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# Sampling: cached == naive
# ------------------------------------------------------------------------------------------------------------------


SAMPLING_CASES = [
    ("conditional", dict()),
    ("conditional", dict(temperature=0.7, top_k=3)),
    ("attention", dict(top_p=0.8)),
    ("attention", dict(temperature=1.3, top_k=5, top_p=0.9)),
    ("unconditional", dict(temperature=2.0)),
    ("odd-sizes", dict(top_k=6)),
    ("single-layer", dict()),
]


def sample_kwargs(model, batch, height, width, seed=0):
    inputs = random_inputs(model.config, batch=batch, height=height, width=width, seed=seed)
    return {key: value for key, value in inputs.items() if key != "codes"}


@pytest.mark.parametrize("name, options", SAMPLING_CASES)
def test_cached_sampler_gives_exactly_the_naive_codes(name, options):
    model = make_model(CONFIGS[name])
    conditions = sample_kwargs(model, 3, 6, 4)
    results = []
    for seed in (0, 1, 2):
        cached = model.sample(3, (6, 4), generator=torch.Generator().manual_seed(seed), **conditions, **options)
        naive = model.sample(3, (6, 4), generator=torch.Generator().manual_seed(seed), use_cache=False,
                             **conditions, **options)  # fmt: skip
        assert cached.shape == (3, 6, 4) and cached.dtype == torch.long
        assert torch.equal(cached, naive), f"seed {seed}"
        assert 0 <= int(cached.min()) and int(cached.max()) < K
        results.append(cached)
    assert not torch.equal(results[0], results[1])  # the seed matters


def test_sampling_uses_the_global_rng_without_a_generator():
    model = make_model()
    conditions = sample_kwargs(model, 2, 6, 6)
    torch.manual_seed(5)
    cached = model.sample(2, **conditions)  # shape from config.code_shape
    torch.manual_seed(5)
    naive = model.sample(2, **conditions, use_cache=False)
    assert cached.shape == (2, 6, 6) and torch.equal(cached, naive)


@pytest.mark.parametrize(
    "name, shape",
    [("conditional", (6, 6)), ("attention", (4, 6)), ("unconditional", (5, 7)), ("odd-sizes", (5, 4)),
     ("single-layer", (3, 3))],
)  # fmt: skip
def test_cached_logits_match_the_full_forward(name, shape):
    model = make_model(CONFIGS[name])
    inputs = random_inputs(model.config, batch=2, height=shape[0], width=shape[1], seed=7)
    full = logits_of(model, **inputs)
    with torch.no_grad():
        spatial = model.condition_stack(inputs["condition_codes"]) if "condition_codes" in inputs else None
        sampler = IncrementalSampler(model, 2, *shape, inputs.get("class_labels"), spatial)
        for i in range(shape[0]):
            for j in range(shape[1]):
                cached = sampler.logits(i, j)  # teacher forcing with the given codes
                assert torch.allclose(cached, full[:, :, i, j], rtol=1e-4, atol=1e-5), (i, j)
                sampler.push(i, j, inputs["codes"][:, i, j])


def test_fixed_codes_are_kept_and_condition_the_rest():
    model = make_model(attention_config)
    conditions = sample_kwargs(model, 2, 6, 6)
    generator = torch.Generator().manual_seed(11)
    fixed = torch.randint(0, K, (2, 6, 6), generator=generator)
    mask = torch.rand(2, 6, 6, generator=generator) < 0.5
    for options in (dict(), dict(top_k=4, temperature=0.8)):
        cached = model.sample(2, generator=torch.Generator().manual_seed(0), fixed_codes=fixed, fixed_mask=mask,
                              **conditions, **options)  # fmt: skip
        naive = model.sample(2, generator=torch.Generator().manual_seed(0), fixed_codes=fixed, fixed_mask=mask,
                             use_cache=False, **conditions, **options)  # fmt: skip
        assert torch.equal(cached, naive)
        assert torch.equal(cached[mask], fixed[mask])
    # Completion: the first three rows fixed, the rest greedy (top_k=1) must follow the forward's argmax given them.
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[:, :3] = True
    completed = model.sample(2, top_k=1, fixed_codes=fixed, fixed_mask=mask, **conditions)
    expected = fixed.clone()
    for i in range(3, 6):
        for j in range(6):
            expected[:, i, j] = logits_of(model, codes=expected, **conditions)[:, :, i, j].argmax(dim=1)
    assert torch.equal(completed, expected)
    # Everything fixed: the fixed codes come back unchanged.
    everything = torch.ones(2, 6, 6, dtype=torch.bool)
    assert torch.equal(model.sample(2, fixed_codes=fixed, fixed_mask=everything, **conditions), fixed)


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    removed = torch.isinf(filter_logits(logits, top_k=2)).tolist()
    assert removed == [[False, False, True, True], [True, True, False, False]]
    # Nucleus: the smallest set reaching top_p; 0.5 alone reaches 0.5, 0.5 + 0.3 reaches 0.8.
    assert torch.isinf(filter_logits(logits, top_p=0.5))[0].tolist() == [False, True, True, True]
    assert torch.isinf(filter_logits(logits, top_p=0.79))[0].tolist() == [False, False, True, True]
    assert torch.isinf(filter_logits(logits, top_p=0.81))[1].tolist() == [True, False, False, False]
    assert torch.equal(filter_logits(logits, top_k=10, top_p=1.0), logits)
    # Greedy sampling through the model picks the argmax of the full forward at the first position.
    model = make_model(unconditional_config)
    first = model.sample(4, (1, 1), top_k=1)
    zeros = torch.zeros(4, 1, 1, dtype=torch.long)
    assert torch.equal(first[:, 0, 0], logits_of(model, codes=zeros)[:, :, 0, 0].argmax(dim=1))


def test_sample_restores_the_training_mode():
    model = make_model(unconditional_config).train()
    codes = model.sample(1, (2, 2), generator=torch.Generator().manual_seed(0))
    assert model.training and codes.shape == (1, 2, 2)
    assert all(module.training for module in model.modules())
    model.eval()
    model.sample(1, (2, 2))
    assert not model.training


# ------------------------------------------------------------------------------------------------------------------
# Config, presets, init
# ------------------------------------------------------------------------------------------------------------------


def test_presets_match_the_papers():
    assert PixelCNNPriorConfig.list_presets() == ["mnist", "vqvae2-cifar10-bottom", "vqvae2-cifar10-top", "vqvae2-imagenet256-bottom",
                                                  "vqvae2-imagenet256-top"]
    top = PixelCNNPriorConfig.from_preset("vqvae2-imagenet256-top")
    assert (top.num_layers, top.hidden_channels, top.num_attention_layers, top.num_heads) == (20, 512, 4, 8)
    assert (top.dropout, top.num_embeddings, top.code_shape, top.num_classes) == (0.1, 512, [32, 32], 1000)
    assert top.condition_num_embeddings == 0 and top.attention_positions == [4, 8, 12, 16]
    bottom = PixelCNNPriorConfig.from_preset("vqvae2-imagenet256-bottom")
    assert (bottom.num_attention_layers, bottom.num_embeddings, bottom.code_shape) == (0, 512, [64, 64])
    assert (bottom.condition_num_embeddings, bottom.condition_num_residual_blocks) == (512, 20)
    assert (bottom.condition_upsample_factor, bottom.num_classes) == (2, 1000)
    mnist = PixelCNNPriorConfig.from_preset("mnist", hidden_channels=32)
    assert (mnist.num_embeddings, mnist.code_shape, mnist.num_classes, mnist.hidden_channels) == (128, [7, 7], 10, 32)
    assert mnist.num_attention_layers == 0 and mnist.condition_num_embeddings == 0
    with pytest.raises(ValueError, match="unknown PixelCNNPriorConfig preset 'nope'; known presets: mnist"):
        PixelCNNPriorConfig.from_preset("nope")


def test_config_round_trip_and_wrong_model_type(tmp_path):
    config = attention_config(code_shape=(8, 4))
    assert config.code_shape == [8, 4]
    config.save_pretrained(tmp_path)
    loaded = PixelCNNPriorConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict() and loaded.attention_positions == [1, 2]
    (tmp_path / "config.json").write_text('{"model_type": "vqvae"}')
    with pytest.raises(ValueError, match="model_type 'vqvae', not 'pixelcnn_prior'"):
        PixelCNNPriorConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(kernel_size=4), r"kernel_size must be odd"),
        (dict(first_kernel_size=1), r"first_kernel_size must be an integer >= 3, got 1"),
        (dict(num_embeddings=0), r"num_embeddings must be an integer >= 1, got 0"),
        (dict(num_classes=-1), r"num_classes \(0 for an unconditional prior\) must be an integer >= 0"),
        (dict(num_attention_layers=3), r"num_attention_layers=3 is too many for num_layers=3.*at most .* 2"),
        (dict(num_attention_layers=1, num_heads=3), r"hidden_channels=16 is not divisible by num_heads=3"),
        (dict(dropout=1.0), r"dropout must be a number in \[0, 1\), got 1.0"),
        (dict(condition_upsample_factor=0), r"condition_upsample_factor must be an integer >= 1, got 0"),
        (dict(code_shape=[5, 6]), r"code_shape \[5, 6\] is not divisible by condition_upsample_factor 2"),
        (dict(code_shape=[6]), r"code_shape must be \[height, width\] or None"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_pytorch_default_init_not_transformers_normal():
    model = make_model(attention_config)
    assert 0.8 < model.embedding.weight.std() < 1.2  # nn.Embedding: N(0, 1)
    conv = model.layers[1].vertical_conv  # kaiming-uniform(a=√5): |w| <= 1 / sqrt(fan_in)
    fan_in = conv.weight[0].numel()
    assert conv.weight.abs().max() <= fan_in**-0.5 and conv.weight.std() > 0.5 * fan_in**-0.5 / 3**0.5
    block = model.attention_blocks[0]
    assert torch.equal(block.norm.weight, torch.ones(16)) and torch.equal(block.norm.bias, torch.zeros(16))
    assert model.layers[-1].residual_conv is None  # the last layer's horizontal output would never be read


# ------------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------------


def test_forward_input_errors():
    model = make_model()
    inputs = random_inputs(model.config)
    cases = [
        (dict(class_labels=torch.tensor([0, 3])),
         r"class_labels must lie in \[0, 3\) \(num_classes=3\), got values in \[0, 3\]"),
        (dict(class_labels=torch.tensor([0, -1])), r"class_labels must lie in \[0, 3\)"),
        (dict(class_labels=None), r"class-conditional \(num_classes=3\); pass class_labels"),
        (dict(class_labels=torch.tensor([0, 1, 2])), r"class_labels must be a \(2,\) LongTensor"),
        (dict(class_labels=torch.tensor([0.0, 1.0])), r"class_labels must be a \(2,\) LongTensor"),
        (dict(condition_codes=None), r"pass condition_codes, a \(batch, height / 2, width / 2\) LongTensor"),
        (dict(condition_codes=torch.full((2, 3, 3), CONDITION_K)), r"condition_codes must lie in \[0, 5\)"),
        (dict(condition_codes=torch.zeros(2, 6, 6, dtype=torch.long)),
         r"condition_codes have shape \(2, 6, 6\), inconsistent with codes of shape \(2, 6, 6\) and "
         r"condition_upsample_factor=2.*= \(2, 3, 3\)"),
        (dict(condition_codes=torch.zeros(1, 3, 3, dtype=torch.long)), r"inconsistent with codes"),
        (dict(condition_codes=torch.zeros(2, 3, dtype=torch.long)), r"condition_codes must be a \(batch, height"),
        (dict(codes=torch.full((2, 6, 6), K)),
         r"codes must lie in \[0, 8\) \(num_embeddings=8\), got values in \[8, 8\]"),
        (dict(codes=torch.full((2, 6, 6), -1)), r"codes must lie in \[0, 8\)"),
        (dict(codes=torch.zeros(2, 36, dtype=torch.long)), r"codes must be a \(batch, height, width\) LongTensor"),
        (dict(codes=torch.zeros(2, 1, 6, 6, dtype=torch.long)), r"codes must be a \(batch, height, width\)"),
        (dict(codes=torch.zeros(2, 6, 6)),
         r"codes must hold integer code indices \(torch.long\), got dtype torch.float32"),
    ]  # fmt: skip
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            model(**{**inputs, **change})
    odd = {**inputs, "codes": torch.zeros(2, 5, 6, dtype=torch.long), "condition_codes": torch.zeros(2, 2, 3).long()}
    with pytest.raises(ValueError, match=r"condition_upsample_factor=2: the condition map is upsampled 2x"):
        model(**odd)
    plain = make_model(unconditional_config)
    codes = inputs["codes"]
    with pytest.raises(ValueError, match=r"not class-conditional \(num_classes=0\); drop them"):
        plain(codes, class_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"no spatial condition \(condition_num_embeddings=0\)"):
        plain(codes, condition_codes=torch.zeros(2, 3, 3, dtype=torch.long))


def test_sampling_argument_errors():
    model = make_model()
    conditions = sample_kwargs(model, 2, 6, 6)
    fixed = torch.zeros(2, 6, 6, dtype=torch.long)
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    cases = [
        (dict(temperature=0), r"temperature must be a finite number > 0, got 0; use a small value"),
        (dict(temperature=-1.0), r"temperature must be a finite number > 0, got -1.0"),
        (dict(temperature=float("nan")), r"temperature must be a finite number > 0, got nan"),
        (dict(top_k=0), r"top_k must be None or an integer >= 1 .*got 0"),
        (dict(top_k=2.5), r"top_k must be None or an integer >= 1"),
        (dict(top_p=0.0), r"top_p must be None or a number in \(0, 1\] .*got 0.0"),
        (dict(top_p=1.5), r"top_p must be None or a number in \(0, 1\]"),
        (dict(fixed_codes=fixed), r"fixed_codes and fixed_mask go together"),
        (dict(fixed_mask=mask), r"fixed_codes and fixed_mask go together"),
        (dict(fixed_codes=fixed[:, :5], fixed_mask=mask),
         r"fixed_codes must have shape \(batch_size, height, width\) = \(2, 6, 6\), got \(2, 5, 6\)"),
        (dict(fixed_codes=fixed, fixed_mask=mask[:1]), r"fixed_mask must have shape .* = \(2, 6, 6\), got \(1, 6, 6\)"),
        (dict(fixed_codes=fixed, fixed_mask=mask.long()), r"fixed_mask must be a bool tensor of shape \(2, 6, 6\)"),
        (dict(fixed_codes=fixed + K, fixed_mask=~mask), r"fixed_codes must lie in \[0, 8\) .*where fixed_mask is True"),
        (dict(shape=(6, 0)), r"shape must be \(height, width\) with positive integers, got \(6, 0\)"),
        (dict(shape=(5, 6)), r"condition_codes have shape \(2, 3, 3\), inconsistent with codes of shape \(2, 5, 6\)"),
        (dict(class_labels=torch.tensor([0, 7])), r"class_labels must lie in \[0, 3\)"),
    ]  # fmt: skip
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            model.sample(2, **{**conditions, **change})
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        model.sample(0, **conditions)
    # Codes outside the mask are ignored; the bottom prior infers its size from the condition codes.
    assert model.sample(2, fixed_codes=fixed + K, fixed_mask=mask, **conditions).shape == (2, 6, 6)
    no_shape = make_model(code_shape=None)
    assert no_shape.sample(2, **conditions).shape == (2, 6, 6)
    with pytest.raises(ValueError, match=r"pass shape=\(height, width\): this config has no code_shape"):
        make_model(unconditional_config).sample(1)
