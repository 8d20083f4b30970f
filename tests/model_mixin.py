"""One mixin that every model family's tests run through (shapes, save/load identity, determinism, gradients).

A test class sets `model_class` and implements `make_config()`, `make_inputs()` and `outputs_to_compare(model,
inputs)`, which returns the tensors that must be identical after a save/load round trip.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file


class ModelTesterMixin:
    model_class = None

    def make_config(self):
        raise NotImplementedError

    def make_inputs(self) -> dict:
        raise NotImplementedError

    def outputs_to_compare(self, model, inputs) -> list[torch.Tensor]:
        raise NotImplementedError

    def expected_shapes(self, config, inputs) -> dict[str, tuple]:
        """Names of forward-output fields -> expected shapes."""
        raise NotImplementedError

    # -- tests -------------------------------------------------------------------------------------------------

    def test_forward_shapes_and_finite_loss(self):
        config, inputs = self.make_config(), self.make_inputs()
        output = self.model_class(config)(**inputs)
        for name, shape in self.expected_shapes(config, inputs).items():
            value = getattr(output, name)
            got = [tuple(v.shape) for v in value] if isinstance(value, list) else tuple(value.shape)
            assert got == shape, f"{name}: {got} != {shape}"
        assert output.loss.dim() == 0 and torch.isfinite(output.loss)
        assert all(v is not None for v in output.values()), "no placeholder None in outputs"

    def test_save_load_round_trip_identical(self, tmp_path):
        model = self.model_class(self.make_config())
        inputs = self.make_inputs()
        model.train()
        model(**inputs)  # one training step's worth of buffer updates (EMA statistics etc.) must survive too
        model.eval()
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()
        assert not list(tmp_path.glob("*.bin")), "weights are saved only as safetensors"
        saved = load_file(tmp_path / "model.safetensors")
        assert set(saved) == set(model.state_dict()), "every parameter and buffer is saved"
        loaded = self.model_class.from_pretrained(tmp_path).eval()
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), f"{key} differs after from_pretrained"
        for before, after in zip(self.outputs_to_compare(model, inputs), self.outputs_to_compare(loaded, inputs)):
            assert torch.equal(before, after)

    def test_eval_is_deterministic(self):
        model = self.model_class(self.make_config()).eval()
        inputs = self.make_inputs()
        first = self.outputs_to_compare(model, inputs)
        second = self.outputs_to_compare(model, inputs)
        for a, b in zip(first, second):
            assert torch.equal(a, b)

    def test_gradients_are_finite_and_reach_every_trainable_parameter(self):
        model = self.model_class(self.make_config()).train()
        output = model(**self.make_inputs())
        output.loss.backward()
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            assert parameter.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"

    def test_same_seed_same_initial_weights(self):
        torch.manual_seed(1)
        first = self.model_class(self.make_config())
        torch.manual_seed(1)
        second = self.model_class(self.make_config())
        for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
            assert torch.equal(a, b), name
