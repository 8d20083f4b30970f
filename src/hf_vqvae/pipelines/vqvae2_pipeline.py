"""Sampling pipeline: one prior per level (top first) and the VQ-VAE decoder, as a diffusers `DiffusionPipeline`.

Ancestral sampling (VQ-VAE-2 §3.2): the top prior samples the top codes, each lower prior samples its level
conditioned on the level above, and the decoder maps all levels to pixels. A single-level VQ-VAE takes one prior.
Also: completion / inpainting (keep the codes of a known region, resample the rest), reconstruction (encode ->
decode, the papers' denoising use) and classifier-based rejection sampling (VQ-VAE-2 §3.3).

This module travels with every saved pipeline (`save_pretrained` copies it and the modules it imports with a dot,
`codes_source.py` and `standalone_code.py`, to the folder's root), so that `DiffusionPipeline.from_pretrained(folder
or repo id, trust_remote_code=True)` works where hf_vqvae is not installed: it imports only the standard library,
torch, diffusers, transformers and huggingface_hub, and nothing relative but those two (diffusers copies a custom
pipeline's direct relative imports only, not theirs).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.dynamic_modules_utils import get_relative_imports
from huggingface_hub import snapshot_download
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from .codes_source import check_codes_source
from .standalone_code import write_standalone_module

# What `download` leaves out of a Hub repo: pickled weights and other frameworks' formats (published repos hold none).
_NOT_DOWNLOADED = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.msgpack", "*.onnx", "*.pb"]
_HUB_ARGUMENTS = ("cache_dir", "force_download", "local_files_only", "token", "revision")


class VQVAE2Pipeline(DiffusionPipeline):
    r"""
    Generate images from a VQ-VAE or VQ-VAE-2 and its priors.

    Args:
        vqvae ([`VQVAEModel`] or [`VQVAE2Model`]): the decoder (and encoder, for inpainting and reconstruction).
        prior_level_0: the prior of the top level ([`PixelCNNPriorModel`] or [`TransformerPriorModel`]).
        prior_level_1, prior_level_2 (*optional*): the priors of the lower levels, each conditioned on the level above.

    A prior trained by `scripts/train.py` on codes from `scripts/extract_codes.py` records which VQ model made them
    (`config.codes_source`); a prior of another VQ model is refused even when its codebook size and code shape fit
    (see `hf_vqvae.pipelines.codes_source`).

    Example:

    ```python
    >>> pipe = VQVAE2Pipeline(vqvae=vqvae, prior_level_0=top_prior, prior_level_1=bottom_prior)
    >>> images = pipe(batch_size=4, class_labels=[1, 2, 3, 4], temperature=0.9, generator=torch.manual_seed(0)).images
    >>> pipe.save_pretrained("my-pipeline")  # weights, configs and the code of the pipeline and of every component
    >>> VQVAE2Pipeline.from_pretrained("my-pipeline")  # the installed package's code
    >>> DiffusionPipeline.from_pretrained("my-pipeline", trust_remote_code=True)  # the folder's code, no install
    ```
    """

    model_cpu_offload_seq = "prior_level_0->prior_level_1->prior_level_2->vqvae"
    _optional_components = ["prior_level_1", "prior_level_2"]

    def __init__(self, vqvae, prior_level_0, prior_level_1=None, prior_level_2=None):
        super().__init__()
        priors = [prior for prior in (prior_level_0, prior_level_1, prior_level_2) if prior is not None]
        check_priors_match(vqvae, priors, given=[p is not None for p in (prior_level_0, prior_level_1, prior_level_2)])
        check_codes_source(vqvae, priors)
        self.register_modules(vqvae=vqvae, prior_level_0=prior_level_0, prior_level_1=prior_level_1,
                              prior_level_2=prior_level_2)  # fmt: skip

    @property
    def priors(self) -> list:
        return [p for p in (self.prior_level_0, self.prior_level_1, self.prior_level_2) if p is not None]

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: list[int] | torch.LongTensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        image_size: int | list[int] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Sample `batch_size` images (class-conditional when the priors are); `image_size` defaults to the
        decoder's training resolution."""
        # 1. check the inputs
        labels = self._class_labels(class_labels, batch_size)
        shapes = self.vqvae.config.latent_shapes(image_size)
        # 2. ancestral sampling of the codes, top level first
        codes = self.sample_codes(batch_size, shapes, labels, temperature, top_k, top_p, generator)
        # 3. decode and post-process
        images = self.vqvae.decode_code(codes)
        return self._output(images, output_type, return_dict)

    def sample_codes(self, batch_size, shapes, labels, temperature=1.0, top_k=None, top_p=None, generator=None,
                     fixed_codes=None, fixed_masks=None, use_cache=True) -> list[torch.LongTensor]:  # fmt: skip
        """Codes per level, top first; where `fixed_masks[l]` is True the code `fixed_codes[l]` is kept.
        `use_cache=False` runs every prior's full network once per position (the same codes, slower)."""
        codes = []
        for level, (prior, shape) in enumerate(zip(self.priors, shapes)):
            kwargs = dict(class_labels=labels if prior.config.num_classes else None, temperature=temperature,
                          top_k=top_k, top_p=top_p, generator=generator, use_cache=use_cache)  # fmt: skip
            if level > 0:
                kwargs["condition_codes"] = codes[level - 1]
            if fixed_masks is not None:
                kwargs.update(fixed_codes=fixed_codes[level], fixed_mask=fixed_masks[level])
            codes.append(prior.sample(batch_size, shape=tuple(shape), **kwargs).to(self.vqvae.device))
        return codes

    @torch.no_grad()
    def inpaint(self, pixel_values: torch.Tensor, mask: torch.Tensor, class_labels=None, temperature: float = 1.0,
                generator: torch.Generator | None = None, output_type: str = "pil") -> ImagePipelineOutput:  # fmt: skip
        """Resample the region where `mask` (B, H, W) is True and keep the rest; see `inpaint_codes`."""
        codes = self.inpaint_codes(pixel_values, mask, class_labels, temperature, generator)
        return self._output(self.vqvae.decode_code(codes), output_type, True)

    @torch.no_grad()
    def inpaint_codes(self, pixel_values: torch.Tensor, mask: torch.Tensor, class_labels=None,
                      temperature: float = 1.0, generator: torch.Generator | None = None) -> list[torch.LongTensor]:  # fmt: skip
        """Codes per level (top first) of `pixel_values` (in [-1, 1]) with the codes under `mask` resampled.

        A code is resampled when any of its pixels is masked; every other code is kept, and the priors condition on
        the kept codes before each position in raster order (completing the lower part of an image is a mask over
        its lower rows). Both priors (PixelCNN and transformer) sample around fixed codes.
        """
        expected = (pixel_values.shape[0], *pixel_values.shape[-2:])
        if tuple(mask.shape) != expected:
            raise ValueError(f"mask must have shape (batch, height, width) = {expected}, got {tuple(mask.shape)}")
        encoded = self.vqvae.encode(pixel_values.to(self.vqvae.device)).codes
        keep = [~_mask_to_codes(mask.to(self.vqvae.device), code.shape[-2:]) for code in encoded]
        labels = self._class_labels(class_labels, pixel_values.shape[0])
        shapes = [code.shape[-2:] for code in encoded]
        return self.sample_codes(pixel_values.shape[0], shapes, labels, temperature, generator=generator,
                                 fixed_codes=encoded, fixed_masks=keep)  # fmt: skip

    @torch.no_grad()
    def reconstruct(self, pixel_values: torch.Tensor, output_type: str = "pil") -> ImagePipelineOutput:
        """Encode -> decode (the papers' denoising / compression use)."""
        codes = self.vqvae.encode(pixel_values.to(self.vqvae.device)).codes
        return self._output(self.vqvae.decode_code(codes), output_type, True)

    def _class_labels(self, class_labels, batch_size: int) -> torch.LongTensor | None:
        num_classes = self.prior_level_0.config.num_classes
        if class_labels is None:
            if num_classes:
                raise ValueError(f"the priors are class-conditional ({num_classes} classes): pass class_labels")
            return None
        if not num_classes:
            raise ValueError("the priors are unconditional: class_labels must be None")
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=self.vqvae.device).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(batch_size)
        if labels.numel() != batch_size:
            raise ValueError(f"class_labels has {labels.numel()} entries for batch_size {batch_size}")
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"class labels must lie in [0, {num_classes}), got {labels.tolist()}")
        return labels

    def _output(self, images: torch.Tensor, output_type: str, return_dict: bool):
        unit = ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)  # [-1, 1] -> [0, 1]
        if output_type == "pt":
            result = unit
        elif output_type in ("np", "pil"):
            result = unit.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                result = self.numpy_to_pil(result)
        else:
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        return ImagePipelineOutput(images=result) if return_dict else (result,)

    # ------------------------------------------------------------------------------------------------------------
    # saving and loading: a saved folder carries its code
    # ------------------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """`DiffusionPipeline.save_pretrained`, in diffusers' layout for code that ships with the folder, so that
        `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads it where hf_vqvae is not installed.

        `model_index.json` names the pipeline `[module, class]` with that module (and the two it imports) at the
        folder's root, and each component `[module, class]` with its code in one file beside its weights
        (`<modeling module>_standalone.py`, see `standalone_code`): from a Hub repo id diffusers downloads only
        that file of a component's code. The component's own `save_pretrained` also writes its modules with the
        `auto_map` that `AutoModel.from_pretrained(..., trust_remote_code=True)` reads.
        """
        if push_to_hub:
            raise ValueError("VQVAE2Pipeline.save_pretrained(push_to_hub=True) is not supported: save to a folder, "
                             "then publish it with scripts/push_to_hub.py, which checks it loads without hf_vqvae")  # fmt: skip
        for component in self.components.values():
            if component is not None:
                _register_for_auto_class(component)
        super().save_pretrained(save_directory, **kwargs)
        _write_code_layout(self, Path(save_directory))

    @classmethod
    def load_config(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`DiffusionPipeline.load_config`, reading a folder saved with its code (see `save_pretrained`) as this
        class: components whose model type this process has registered with `AutoModel` (`import hf_vqvae` does)
        load with the registered classes, so `VQVAE2Pipeline.from_pretrained(folder)` runs none of the folder's code
        and needs no `trust_remote_code`; others load from the folder's code (and need it)."""
        loaded = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            return loaded
        if isinstance(loaded, tuple):
            return (_with_registered_classes(loaded[0], folder), *loaded[1:])
        return _with_registered_classes(loaded, folder)

    @classmethod
    def download(cls, pretrained_model_name, **kwargs) -> str:
        """The whole Hub repo (published repos hold only what the pipeline loads), for `from_pretrained` to read
        as a folder. diffusers' own `download` would run the repo's pipeline module, and so ask for
        `trust_remote_code`, even where this class is the one that loads."""
        hub_arguments = {name: kwargs[name] for name in _HUB_ARGUMENTS if kwargs.get(name) is not None}
        return snapshot_download(pretrained_model_name, ignore_patterns=_NOT_DOWNLOADED, **hub_arguments)


def _register_for_auto_class(component) -> None:
    """Make `save_pretrained` write the component's code and `auto_map`. hf_vqvae registers its classes on import;
    a class loaded from a folder's code by diffusers is not (transformers' Auto classes register theirs)."""
    model_class = type(component)
    if getattr(model_class, "_auto_class", "") is None:
        model_class.register_for_auto_class("AutoModel")
    config_class = type(getattr(component, "config", None))
    if getattr(config_class, "_auto_class", "") is None:
        config_class.register_for_auto_class("AutoConfig")


def pipeline_code_files(pipeline_class: type) -> list[Path]:
    """The files `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` needs for `pipeline_class`: its
    module and the same-folder modules that module imports with a dot. diffusers copies only those direct imports
    (with its own `get_relative_imports`, used here too), so they must not import further modules with a dot."""
    module_file = Path(sys.modules[pipeline_class.__module__].__file__)
    files = [module_file, *(module_file.parent / f"{name}.py" for name in sorted(get_relative_imports(module_file)))]
    for path in files[1:]:
        nested = get_relative_imports(path)
        if nested:
            raise RuntimeError(f"{path.name}, imported by {module_file.name}, imports {sorted(nested)} with a dot; "
                               "diffusers does not copy those for remote code: import them in the pipeline module")  # fmt: skip
    return files


def _write_code_layout(pipeline: VQVAE2Pipeline, folder: Path) -> None:
    """Copy the pipeline's code to the folder's root and name it in model_index.json; join each component's code
    into one module and name that."""
    files = pipeline_code_files(type(pipeline))
    for path in files:
        shutil.copyfile(path, folder / path.name)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = [files[0].stem, type(pipeline).__name__]
    for name, component in pipeline.components.items():
        module = type(component).__module__.rpartition(".")[2] if component is not None else None
        if module and (folder / name / f"{module}.py").is_file():
            index[name] = [write_standalone_module(folder / name, module), type(component).__name__]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _with_registered_classes(config: dict, folder: Path) -> dict:
    """model_index.json as this process's classes load it: the pipeline by class name, and each component whose
    code ships in its folder by the class registered with `AutoModel` for its model type (when there is one)."""
    config = dict(config)
    if isinstance(config.get("_class_name"), list):
        config["_class_name"] = config["_class_name"][1]
    for name, entry in config.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
            continue
        if not (folder / name / f"{entry[0]}.py").is_file():
            continue  # a class of an installed library, not code of the folder
        model_class = _registered_model_class(folder / name / "config.json")
        if model_class is not None and model_class.__name__ == entry[1]:
            config[name] = [model_class.__module__, model_class.__name__]
    return config


def _registered_model_class(config_file: Path) -> type | None:
    """The class `AutoModel` maps the config's `model_type` to in this process, or None."""
    if not config_file.is_file():
        return None
    model_type = json.loads(config_file.read_text()).get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        return None
    config_class = CONFIG_MAPPING[model_type]
    return MODEL_MAPPING[config_class] if config_class in MODEL_MAPPING else None


def _mask_to_codes(mask: torch.Tensor, shape) -> torch.Tensor:
    """A pixel mask (B, H, W) -> a code-grid mask: a code is resampled if any of its pixels is masked."""
    return F.adaptive_max_pool2d(mask.float()[:, None], tuple(shape))[:, 0] > 0


def check_priors_match(vqvae, priors: list, given: list[bool]) -> None:
    """Refuse, at construction, priors whose codebook, code shape, level count or conditioning do not fit."""
    config = vqvae.config
    levels = config.num_levels
    if given[0] is False:
        raise ValueError("prior_level_0 (the top prior) is required")
    if any(given[len(priors):]) or len(priors) != levels:
        raise ValueError(f"the decoder has {levels} level(s) but {len(priors)} prior(s) were given, in order from the top")
    shapes = config.latent_shapes()
    for level, (prior, shape) in enumerate(zip(priors, shapes)):
        prior_config = prior.config
        if prior_config.num_embeddings != config.num_embeddings:
            raise ValueError(f"prior_level_{level} models K = {prior_config.num_embeddings} codes but the decoder's "
                             f"codebook has K = {config.num_embeddings}")  # fmt: skip
        code_shape = getattr(prior_config, "code_shape", None)
        if code_shape is not None and list(code_shape) != list(shape):
            raise ValueError(f"prior_level_{level} was trained on {list(code_shape)} code maps but the decoder's level "
                             f"{level} is {list(shape)} at its image size {config.image_size}")  # fmt: skip
        condition = getattr(prior_config, "condition_num_embeddings", 0)
        if level > 0 and condition != config.num_embeddings:
            raise ValueError(f"prior_level_{level} must be conditioned on the {config.num_embeddings} codes of level "
                             f"{level - 1} (its condition_num_embeddings is {condition})")  # fmt: skip
        if level == 0 and condition:
            raise ValueError("prior_level_0 is conditioned on an upper level, but it is the top level")
        if prior_config.num_classes != priors[0].config.num_classes:
            raise ValueError("all priors must share the same class conditioning (num_classes)")


def rejection_sample(pipe: VQVAE2Pipeline, classifier: Callable[[torch.Tensor], torch.Tensor], class_label: int,
                     num_samples: int, threshold: float | None = None, keep_fraction: float | None = None,
                     batch_size: int = 16, generator: torch.Generator | None = None,
                     progress: Callable[[Iterable], Iterable] | None = None, **sampling) -> dict:  # fmt: skip
    """Classifier-based rejection sampling (VQ-VAE-2 §3.3): keep samples whose classifier probability for
    `class_label` is above `threshold`, or the top `keep_fraction` of them.

    `classifier` maps images in [0, 1] `(B, C, H, W)` to logits `(B, num_classes)` (wrap a transformers
    `AutoModelForImageClassification` with its processor to get one). Returns `images` (kept, [0, 1] tensors),
    `probabilities` (of every sample), `acceptance_rate`. `progress` wraps the loop over batches (e.g. `tqdm`).
    """
    if (threshold is None) == (keep_fraction is None):
        raise ValueError("give exactly one of threshold (a probability) or keep_fraction (in (0, 1])")
    if keep_fraction is not None and not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    images, probabilities = [], []
    starts = range(0, num_samples, batch_size)
    for start in progress(starts) if progress is not None else starts:
        count = min(batch_size, num_samples - start)
        batch = pipe(count, class_labels=[class_label] * count, generator=generator, output_type="pt", **sampling).images
        with torch.no_grad():
            probabilities.append(torch.softmax(classifier(batch).float(), dim=-1)[:, class_label].cpu())
        images.append(batch.cpu())
    images, probabilities = torch.cat(images), torch.cat(probabilities)
    if threshold is not None:
        keep = probabilities >= threshold
    else:
        keep = torch.zeros_like(probabilities, dtype=torch.bool)
        keep[probabilities.argsort(descending=True)[: max(1, int(round(keep_fraction * num_samples)))]] = True
    return {"images": images[keep], "probabilities": probabilities, "acceptance_rate": float(keep.float().mean()),
            "kept": keep}  # fmt: skip


__all__ = ["VQVAE2Pipeline", "check_priors_match", "pipeline_code_files", "rejection_sample"]
