"""Transformer prior over VQ-VAE codes: token layout, teacher forcing, causality, sampling through generate(), I/O."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from model_mixin import ModelTesterMixin

from hf_vqvae import VQVAEConfig
from hf_vqvae.models.transformer_prior import (
    CodeOnlyLogitsProcessor,
    TransformerPriorConfig,
    TransformerPriorModel,
    TransformerPriorOutput,
)

PRIOR_DIR = Path(__file__).resolve().parents[1] / "src" / "hf_vqvae" / "models" / "transformer_prior"
UNCONDITIONAL = dict(num_classes=0, condition_num_embeddings=0, condition_shape=None)


def tiny(**overrides) -> TransformerPriorConfig:
    """K = 8 codes on 4x4 maps, 3 classes, conditioned on 2x2 maps of 5 upper-level codes; a 2-layer GPT-2."""
    fields = dict(
        num_embeddings=8, code_shape=[4, 4], num_classes=3, condition_num_embeddings=5, condition_shape=[2, 2],
        n_embd=32, n_layer=2, n_head=2,
    )  # fmt: skip
    return TransformerPriorConfig(**{**fields, **overrides})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_inputs(config: TransformerPriorConfig, batch: int = 3, seed: int = 1) -> dict:
    g = gen(seed)
    height, width = config.code_shape
    inputs = {"codes": torch.randint(0, config.num_embeddings, (batch, height, width), generator=g)}
    if config.num_classes:
        inputs["class_labels"] = torch.randint(0, config.num_classes, (batch,), generator=g)
    if config.is_conditioned:
        inputs["condition_codes"] = torch.randint(
            0, config.condition_num_embeddings, (batch, *config.condition_shape), generator=g
        )
    return inputs


def conditioning(inputs: dict, batch: int | None = None) -> dict:
    """The class labels and condition codes of `inputs` (the first `batch` of them), as sample() keywords."""
    return {k: v[:batch] for k, v in inputs.items() if k in ("class_labels", "condition_codes")}


def reference_logits(model: TransformerPriorModel, inputs: dict) -> torch.Tensor:
    """The code logits (B, K, H, W) straight from the GPT2LMHeadModel on the documented token sequence:
    [K + class] [K + C + upper code, raster order] [BOS = K + C + Kc] [codes, raster order]."""
    config = model.config
    K, C, Kc = config.num_embeddings, config.num_classes, config.condition_num_embeddings
    codes = inputs["codes"]
    batch, height, width = codes.shape
    maps = []
    for b in range(batch):
        tokens = []
        if C:
            tokens.append(K + int(inputs["class_labels"][b]))
        if Kc:
            tokens += [K + C + int(code) for code in inputs["condition_codes"][b].reshape(-1)]
        tokens.append(K + C + Kc)
        bos_position = len(tokens) - 1
        tokens += [int(code) for code in codes[b].reshape(-1)]
        logits = model.transformer(input_ids=torch.tensor([tokens])).logits[0]  # (T, vocab)
        predicted = logits[bos_position : bos_position + height * width, :K]  # position t - 1 predicts code t
        maps.append(predicted.T.reshape(K, height, width))
    return torch.stack(maps)


# ------------------------------------------------------------------------------------------------------------------
# The shared model tests
# ------------------------------------------------------------------------------------------------------------------


class _PriorTester(ModelTesterMixin):
    model_class = TransformerPriorModel

    def make_inputs(self) -> dict:
        return make_inputs(self.make_config())

    def outputs_to_compare(self, model, inputs):
        output = model(**inputs)
        return [output.loss, output.logits, model.sample(2, **conditioning(inputs, 2), generator=gen(4))]

    def expected_shapes(self, config, inputs):
        return {"loss": (), "logits": (inputs["codes"].shape[0], config.num_embeddings, *config.code_shape)}


class TestClassAndConditionMap(_PriorTester):
    def make_config(self):
        return tiny()


class TestUnconditional(_PriorTester):
    def make_config(self):
        return tiny(**UNCONDITIONAL)


# ------------------------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------------------------


def test_token_layout_and_positions():
    config = tiny()
    assert (config.class_token_offset, config.condition_token_offset, config.bos_token_id) == (8, 11, 16)
    assert (config.pad_token_id, config.vocab_size) == (17, 18)
    assert config.n_positions == 1 + 4 + 1 + 16
    unconditional = tiny(**UNCONDITIONAL, max_code_positions=25)
    assert (unconditional.bos_token_id, unconditional.vocab_size, unconditional.n_positions) == (8, 10, 26)
    gpt2 = TransformerPriorModel(config).transformer.config
    assert (gpt2.vocab_size, gpt2.n_positions) == (18, 22)
    assert (gpt2.bos_token_id, gpt2.eos_token_id, gpt2.pad_token_id, gpt2.tie_word_embeddings) == (16, 16, 17, False)


def test_presets():
    assert TransformerPriorConfig.list_presets() == ["mnist", "vqvae2-imagenet256-bottom", "vqvae2-imagenet256-top"]
    mnist = TransformerPriorConfig.from_preset("mnist")
    assert (mnist.num_embeddings, mnist.code_shape, mnist.num_classes) == (128, [7, 7], 10)
    assert not mnist.is_conditioned
    assert (mnist.n_embd, mnist.n_layer, mnist.n_head, mnist.n_positions) == (128, 4, 4, 51)
    assert mnist.num_embeddings == VQVAEConfig.from_preset("mnist").num_embeddings
    top = TransformerPriorConfig.from_preset("vqvae2-imagenet256-top")
    assert (top.num_embeddings, top.code_shape, top.num_classes, top.is_conditioned) == (512, [32, 32], 1000, False)
    assert (top.n_embd, top.n_layer, top.n_head, top.n_positions) == (512, 12, 8, 1 + 1 + 1024)
    bottom = TransformerPriorConfig.from_preset("vqvae2-imagenet256-bottom")
    assert (bottom.num_embeddings, bottom.code_shape, bottom.num_classes) == (512, [64, 64], 0)
    assert (bottom.condition_num_embeddings, bottom.condition_shape) == (512, [32, 32])
    assert (bottom.n_embd, bottom.n_layer, bottom.n_positions) == (512, 12, 1024 + 1 + 4096)
    assert TransformerPriorConfig.from_preset("mnist", n_layer=2).n_layer == 2
    model = TransformerPriorModel(mnist)
    assert model(torch.zeros(1, 7, 7, dtype=torch.long), torch.tensor([3])).logits.shape == (1, 128, 7, 7)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_embeddings=0), "num_embeddings"),
        (dict(num_classes=-1), "num_classes"),
        (dict(condition_num_embeddings=-2), "condition_num_embeddings"),
        (dict(code_shape=[4]), r"code_shape must be \[height, width\]"),
        (dict(code_shape=[4, 0]), "code_shape"),
        (dict(code_shape=None), "code_shape .* or max_code_positions"),
        (dict(max_code_positions=8), "more than max_code_positions=8"),
        (dict(max_code_positions=0), "max_code_positions"),
        (dict(condition_shape=None), "needs condition_shape"),
        (dict(condition_num_embeddings=0), "condition_num_embeddings is 0"),
        (dict(max_condition_positions=3), "more than max_condition_positions=3"),
        (dict(n_embd=30, n_head=4), "n_embd=30 is not divisible by n_head=4"),
        (dict(n_layer=0), "n_layer"),
        (dict(n_inner=0), "n_inner"),
        (dict(activation_function="mish"), "unknown activation_function 'mish'"),
        (dict(attn_pdrop=1.0), "attn_pdrop"),
        (dict(resid_pdrop=-0.1), "resid_pdrop"),
        (dict(layer_norm_epsilon=0.0), "layer_norm_epsilon"),
        (dict(initializer_range=float("nan")), "initializer_range"),
    ],
)
def test_bad_config_values_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_code_shape_optional_with_max_code_positions():
    config = tiny(**UNCONDITIONAL, code_shape=None, max_code_positions=12)
    model = TransformerPriorModel(config)
    assert model.sample(1, shape=(3, 4), generator=gen(0)).shape == (1, 3, 4)
    with pytest.raises(ValueError, match="no default code_shape"):
        model.sample(1)


def test_unknown_preset_lists_known_presets():
    with pytest.raises(ValueError, match="mnist, vqvae2-imagenet256-bottom, vqvae2-imagenet256-top"):
        TransformerPriorConfig.from_preset("cifar10")


def test_config_round_trip_and_refuses_other_model_types(tmp_path):
    config = TransformerPriorConfig.from_preset("vqvae2-imagenet256-bottom", n_layer=2)
    config.save_pretrained(tmp_path / "prior")
    loaded = TransformerPriorConfig.from_pretrained(tmp_path / "prior")
    assert loaded.condition_shape == [32, 32] and loaded.code_shape == [64, 64] and loaded.n_layer == 2
    assert loaded.n_positions == config.n_positions and loaded.vocab_size == config.vocab_size
    VQVAEConfig().save_pretrained(tmp_path / "vq")
    with pytest.raises(ValueError, match="model_type 'vqvae'"):
        TransformerPriorConfig.from_pretrained(tmp_path / "vq")


def test_folder_imports_only_torch_transformers_and_same_folder_modules():
    allowed = {"torch", "transformers", "__future__", "copy", "math", "os", "contextlib", "dataclasses", "typing"}
    for path in PRIOR_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), f"{path.name}: only single-dot relative imports"
                assert node.level == 1 or node.module.split(".")[0] in allowed, f"{path.name}: {node.module}"
            elif isinstance(node, ast.Import):
                assert all(alias.name.split(".")[0] in allowed for alias in node.names), path.name


# ------------------------------------------------------------------------------------------------------------------
# Weights and I/O
# ------------------------------------------------------------------------------------------------------------------


def test_init_is_gpt2s():
    config = tiny(n_embd=64, num_embeddings=64)
    model = TransformerPriorModel(config)
    gpt2 = model.transformer.transformer
    std = config.initializer_range
    for weight in (gpt2.wte.weight, gpt2.wpe.weight, model.transformer.lm_head.weight, gpt2.h[0].attn.c_attn.weight):
        assert abs(weight.std().item() - std) < 0.15 * std and abs(weight.mean().item()) < 0.1 * std
    residual = gpt2.h[1].mlp.c_proj.weight  # GPT-2's scaled residual projections
    assert abs(residual.std().item() - std / (2 * config.n_layer) ** 0.5) < 0.15 * std
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
        if name.endswith("bias"):
            assert torch.equal(parameter, torch.zeros_like(parameter)), name
        if ".ln_" in name and name.endswith("weight"):
            assert torch.equal(parameter, torch.ones_like(parameter)), name


def test_from_pretrained_loads_every_weight(tmp_path):
    model = TransformerPriorModel(tiny()).eval()
    model.save_pretrained(tmp_path)
    loaded, info = TransformerPriorModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    inputs = make_inputs(tiny())
    assert torch.equal(model(**inputs).logits, loaded.eval()(**inputs).logits)


def test_saved_folder_loads_as_remote_code_with_identical_outputs(tmp_path):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    model = TransformerPriorModel(tiny()).eval()
    model.save_pretrained(tmp_path)
    for path in PRIOR_DIR.glob("*_transformer_prior.py"):
        shutil.copy(path, tmp_path)  # what save_pretrained writes once the lead registers the Auto classes
    remote_class = get_class_from_dynamic_module("modeling_transformer_prior.TransformerPriorModel", str(tmp_path))
    assert remote_class is not TransformerPriorModel
    loaded = remote_class.from_pretrained(tmp_path).eval()
    inputs = make_inputs(tiny())
    assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
    cond = conditioning(inputs)
    assert torch.equal(model.sample(3, **cond, generator=gen(2)), loaded.sample(3, **cond, generator=gen(2)))


def test_from_pretrained_refuses_missing_or_truncated_weights(tmp_path):
    TransformerPriorModel(tiny()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        TransformerPriorModel.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(ValueError, match="no model.safetensors"):
        TransformerPriorModel.from_pretrained(tmp_path)


def test_attention_implementation_reaches_gpt2():
    sdpa = TransformerPriorModel(tiny()).eval()
    eager = TransformerPriorModel(tiny(attn_implementation="eager")).eval()
    assert sdpa.transformer.config._attn_implementation == "sdpa"
    assert eager.transformer.config._attn_implementation == "eager"
    eager.load_state_dict(sdpa.state_dict())
    inputs = make_inputs(tiny())
    torch.testing.assert_close(sdpa(**inputs).logits, eager(**inputs).logits, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# forward: teacher forcing
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, UNCONDITIONAL, dict(condition_num_embeddings=0, condition_shape=None)])
def test_logits_match_gpt2_on_the_documented_sequence(overrides):
    config = tiny(**overrides)
    model = TransformerPriorModel(config).eval()
    inputs = make_inputs(config)
    output = model(**inputs)
    assert isinstance(output, TransformerPriorOutput)
    torch.testing.assert_close(output.logits, reference_logits(model, inputs), rtol=1e-5, atol=1e-5)


def test_loss_is_cross_entropy_in_nats_per_code():
    config = tiny()
    model = TransformerPriorModel(config).eval()
    inputs = make_inputs(config)
    output = model(**inputs)
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits, inputs["codes"]))
    log_probs = output.logits.log_softmax(dim=1).gather(1, inputs["codes"][:, None]).squeeze(1)
    torch.testing.assert_close(output.loss, -log_probs.mean())


def test_forward_return_tuple():
    config = tiny()
    model = TransformerPriorModel(config).eval()
    inputs = make_inputs(config)
    loss, logits = model(**inputs, return_dict=False)
    assert torch.equal(loss, model(**inputs).loss) and logits.shape == (3, 8, 4, 4)


def test_logits_are_causal_in_raster_order():
    config = tiny()
    model = TransformerPriorModel(config).eval()
    inputs = make_inputs(config)
    batch, (height, width), p = 3, config.code_shape, 6
    logits = model(**inputs).logits.flatten(2)  # (B, K, H*W)

    later = inputs["codes"].flatten(1).clone()
    later[:, p:] = (later[:, p:] + 1) % config.num_embeddings  # change every code at positions >= p
    changed = model(**{**inputs, "codes": later.view(batch, height, width)}).logits.flatten(2)
    torch.testing.assert_close(changed[..., : p + 1], logits[..., : p + 1], rtol=0, atol=1e-6)
    assert ((changed[..., p + 1 :] - logits[..., p + 1 :]).abs().amax(dim=1) > 1e-5).all()

    earlier = inputs["codes"].flatten(1).clone()
    earlier[:, 2] = (earlier[:, 2] + 1) % config.num_embeddings
    changed = model(**{**inputs, "codes": earlier.view(batch, height, width)}).logits.flatten(2)
    torch.testing.assert_close(changed[..., :3], logits[..., :3], rtol=0, atol=1e-6)
    assert ((changed[..., 3:] - logits[..., 3:]).abs().amax(dim=1) > 1e-5).all(), "every later code sees it"


def test_class_and_condition_change_the_logits_of_every_code():
    config = tiny()
    model = TransformerPriorModel(config).eval()
    inputs = make_inputs(config)
    logits = model(**inputs).logits
    for key, modulus in (("class_labels", config.num_classes), ("condition_codes", config.condition_num_embeddings)):
        other = model(**{**inputs, key: (inputs[key] + 1) % modulus}).logits
        assert ((other - logits).abs().amax(dim=1) > 1e-5).all(), key


def test_smaller_maps_than_the_config_are_accepted():
    model = TransformerPriorModel(tiny()).eval()
    inputs = make_inputs(tiny())
    codes, condition = inputs["codes"][:, :2, :3], inputs["condition_codes"][:, :1]
    assert model(codes, inputs["class_labels"], condition).logits.shape == (3, 8, 2, 3)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    config = tiny(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = TransformerPriorModel(config).train()
    inputs = make_inputs(config)
    model(**inputs).loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.transformer.transformer.gradient_checkpointing, "GPT-2's blocks are checkpointed"
    model(**inputs).loss.backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# sample: generate()
# ------------------------------------------------------------------------------------------------------------------


def test_code_only_logits_processor_masks_every_other_token():
    scores = torch.randn(2, 18)
    masked = CodeOnlyLogitsProcessor(8)(torch.zeros(2, 3, dtype=torch.long), scores)
    assert torch.equal(masked[:, :8], scores[:, :8]) and torch.isneginf(masked[:, 8:]).all()


@pytest.mark.parametrize("overrides", [{}, UNCONDITIONAL])
def test_sample_shape_dtype_range(overrides):
    config = tiny(**overrides)
    model = TransformerPriorModel(config)
    cond = conditioning(make_inputs(config, batch=5))
    for kwargs in ({}, dict(temperature=0.5, top_k=3), dict(top_p=0.6), dict(temperature=2.0, top_k=20, top_p=1.0)):
        codes = model.sample(5, **cond, **kwargs, generator=gen(0))
        assert codes.shape == (5, 4, 4) and codes.dtype == torch.long
        assert codes.min() >= 0 and codes.max() < config.num_embeddings
    assert model.sample(5, shape=(2, 3), **cond, generator=gen(0)).shape == (5, 2, 3)
    assert model.sample(5, shape=[1, 16], **cond, generator=gen(0)).shape == (5, 1, 16)
    assert model.training, "sample restores the training mode"


@pytest.mark.parametrize("overrides", [{}, UNCONDITIONAL])
def test_sample_with_and_without_cache_identical(overrides):
    config = tiny(**overrides)
    model = TransformerPriorModel(config).eval()
    cond = conditioning(make_inputs(config, batch=4))
    for kwargs in ({}, dict(temperature=0.8, top_k=5, top_p=0.9)):
        cached = model.sample(4, **cond, **kwargs, generator=gen(3), use_cache=True)
        uncached = model.sample(4, **cond, **kwargs, generator=gen(3), use_cache=False)
        assert torch.equal(cached, uncached)


def test_sample_is_reproducible_and_leaves_the_global_rng_alone():
    config = tiny()
    model = TransformerPriorModel(config).eval()
    cond = conditioning(make_inputs(config, batch=4))
    state = torch.get_rng_state()
    first = model.sample(4, **cond, generator=gen(7))
    assert torch.equal(torch.get_rng_state(), state), "the caller's global RNG is untouched"
    assert torch.equal(first, model.sample(4, **cond, generator=gen(7)))
    assert not torch.equal(first, model.sample(4, **cond, generator=gen(8)))
    generator = gen(7)
    assert torch.equal(model.sample(4, **cond, generator=generator), first)
    assert not torch.equal(model.sample(4, **cond, generator=generator), first), "the generator advances"
    torch.manual_seed(5)  # without a generator, the global RNG drives the draw
    unseeded = model.sample(4, **cond)
    torch.manual_seed(5)
    assert torch.equal(unseeded, model.sample(4, **cond))


def test_greedy_sample_is_the_argmax_of_forward():
    """top_k=1 decodes greedily: every sampled code is the argmax of forward's logits given the codes before it."""
    config = tiny(initializer_range=0.2)
    model = TransformerPriorModel(config).eval()
    cond = conditioning(make_inputs(config, batch=4))
    codes = model.sample(4, **cond, top_k=1, generator=gen(0))
    assert torch.equal(codes, model.sample(4, **cond, top_k=1, generator=gen(1)))
    assert torch.equal(model(codes, **cond).logits.argmax(dim=1), codes)


def test_class_and_condition_change_the_samples():
    config = tiny(initializer_range=1.0)  # peaked conditional distributions, so the conditioning shows
    model = TransformerPriorModel(config).eval()
    cond = conditioning(make_inputs(config, batch=4))
    codes = model.sample(4, **cond, generator=gen(0))
    other_class = model.sample(4, **{**cond, "class_labels": (cond["class_labels"] + 1) % 3}, generator=gen(0))
    other_map = model.sample(4, **{**cond, "condition_codes": (cond["condition_codes"] + 1) % 5}, generator=gen(0))
    assert not torch.equal(codes, other_class) and not torch.equal(codes, other_map)
    upper = cond["condition_codes"][:2]
    labels = model.sample(2, class_labels=2, condition_codes=upper, generator=gen(0))
    explicit = model.sample(2, class_labels=torch.tensor([2, 2]), condition_codes=upper, generator=gen(0))
    assert torch.equal(labels, explicit), "an int class label applies to every sample"


# ------------------------------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: {**x, "codes": x["codes"][0]}, r"codes must be a \(batch, height, width\) LongTensor"),
        (lambda x: {**x, "codes": x["codes"].float()}, "integer code indices"),
        (lambda x: {**x, "codes": x["codes"] + 8}, r"codes must lie in \[0, 8\) \(num_embeddings=8\)"),
        (lambda x: {**x, "codes": x["codes"] - 1}, r"codes must lie in \[0, 8\)"),
        (lambda x: {**x, "codes": x["codes"].repeat(1, 2, 1)}, "32 codes, more than the 16 positions"),
        (lambda x: {k: v for k, v in x.items() if k != "class_labels"}, "this prior is class-conditional \\(num_classes=3\\); pass class_labels"),
        (lambda x: {**x, "class_labels": x["class_labels"] + 3}, r"class_labels must lie in \[0, 3\)"),
        (lambda x: {**x, "class_labels": x["class_labels"] - 1}, r"class_labels must lie in \[0, 3\)"),
        (lambda x: {**x, "class_labels": x["class_labels"][:2]}, r"class_labels must be a \(3,\) LongTensor"),
        (lambda x: {**x, "class_labels": x["class_labels"].float()}, r"class_labels must be a \(3,\) LongTensor .*dtype torch.float32"),
        (lambda x: {k: v for k, v in x.items() if k != "condition_codes"}, "this prior is conditioned on the upper level's codes"),
        (lambda x: {**x, "condition_codes": x["condition_codes"] + 5}, r"condition_codes must lie in \[0, 5\)"),
        (lambda x: {**x, "condition_codes": x["condition_codes"][:, 0]}, r"condition_codes must be a \(batch, height"),
        (lambda x: {**x, "condition_codes": x["condition_codes"][:2]}, "condition_codes hold 2 maps but the batch"),
        (lambda x: {**x, "condition_codes": x["condition_codes"].repeat(1, 2, 1)}, "8 codes; this prior takes 1 to 4"),
        (lambda x: {**x, "condition_codes": x["condition_codes"].float()}, "integer code indices"),
    ],
)
def test_bad_forward_inputs_raise(change, message):
    config = tiny()
    model = TransformerPriorModel(config)
    with pytest.raises(ValueError, match=message):
        model(**change(make_inputs(config)))


def test_unexpected_conditioning_raises():
    model = TransformerPriorModel(tiny(**UNCONDITIONAL))
    inputs = make_inputs(tiny())
    with pytest.raises(ValueError, match="class_labels were given but this prior is not class-conditional"):
        model(inputs["codes"], class_labels=inputs["class_labels"])
    with pytest.raises(ValueError, match="condition_codes were given but this prior has no spatial condition"):
        model(inputs["codes"], condition_codes=inputs["condition_codes"])
    with pytest.raises(ValueError, match="class_labels were given"):
        model.sample(2, class_labels=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0.0), "temperature must be a finite number > 0"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(top_k=0), "top_k must be None or an integer >= 1"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_p=0.0), r"top_p must be None or a number in \(0, 1\]"),
        (dict(top_p=1.5), "top_p"),
        (dict(shape=(5, 4)), "20 codes, more than the 16 positions"),
        (dict(shape=(4,)), r"shape must be \(height, width\)"),
        (dict(shape=(0, 4)), "every entry of shape"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(class_labels=3), r"class_labels must lie in \[0, 3\)"),
        (dict(class_labels=None), "this prior is class-conditional \\(num_classes=3\\); pass class_labels"),
        (dict(condition_codes=None), "this prior is conditioned on the upper level's codes"),
        (dict(condition_codes=torch.zeros(3, 2, 2, dtype=torch.long)), "condition_codes hold 3 maps but the batch"),
    ],
)
def test_bad_sample_arguments_raise(kwargs, message):
    model = TransformerPriorModel(tiny())
    arguments = dict(batch_size=2, class_labels=1, condition_codes=torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=message):
        model.sample(**{**arguments, **kwargs})


def test_fixed_codes_are_kept_and_condition_what_follows_with_and_without_cache():
    """Completion / inpainting as with the PixelCNN: the masked codes are kept, the others drawn after them."""
    model = TransformerPriorModel(tiny())
    arguments = dict(batch_size=2, class_labels=1, condition_codes=torch.zeros(2, 2, 2, dtype=torch.long))
    fixed = torch.randint(0, 8, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2] = True  # the top half of both maps
    mask[1, 3, 3] = True  # and the last code of the second
    cached = model.sample(**arguments, fixed_codes=fixed, fixed_mask=mask, generator=torch.Generator().manual_seed(0))
    naive = model.sample(**arguments, fixed_codes=fixed, fixed_mask=mask, generator=torch.Generator().manual_seed(0),
                         use_cache=False)  # fmt: skip
    assert torch.equal(cached[mask], fixed[mask]) and torch.equal(cached, naive)
    free = model.sample(**arguments, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(free[mask], fixed[mask])  # without them the same seed draws other codes there
    with pytest.raises(ValueError, match="fixed_codes and fixed_mask go together"):
        model.sample(**arguments, fixed_codes=fixed)
    with pytest.raises(ValueError, match=r"fixed_codes must lie in \[0, 8\)"):
        model.sample(**arguments, fixed_codes=fixed + 8, fixed_mask=mask)


def test_both_priors_share_one_sample_signature():
    import inspect

    from hf_vqvae import PixelCNNPriorModel

    def parameters(cls):
        return [(p.name, p.default) for p in inspect.signature(cls.sample).parameters.values()]

    assert parameters(TransformerPriorModel) == parameters(PixelCNNPriorModel)
