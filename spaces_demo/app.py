"""hf_vqvae demo: reconstruct, inspect codes, sample, interpolate and inpaint with a VQ-VAE, VQ-VAE-2 or VAE.

    python spaces_demo/app.py                                   # the model `make train` writes
    python spaces_demo/app.py --model outputs/vqvae-digits --pipeline outputs/mnist-pipeline
    python spaces_demo/app.py --model org/vqvae2-imagenet --classifier org/classifier --port 7861

On the Hub this folder runs as a Space: there (SPACE_ID is set) the models listed in this folder's README.md
header are used, in order: the model, the pipeline, the classifier. The environment variables HF_VQVAE_MODEL,
HF_VQVAE_PIPELINE and HF_VQVAE_CLASSIFIER (or the command-line options) override them. Nothing needs the network
when the models are local folders. The models run on `--device` (default: cuda when available, else cpu).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import colorsys
import contextlib
import ctypes
import functools
import io
import math
import os
import sys
import tempfile
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
import yaml
from PIL import Image, ImageOps, UnidentifiedImageError

import hf_vqvae  # noqa: F401  (registers the Auto classes)
from hf_vqvae import VQImageProcessor, VQVAE2Pipeline
from hf_vqvae.devices import add_device_argument, resolve_device
from hf_vqvae.image_processing import resize_and_center_crop, to_model_mode
from hf_vqvae.pipelines import ClassifierJudge, rejection_sample
from hf_vqvae.registry import family_for
from transformers import AutoModel

DEFAULT_MODEL = "outputs/vqvae-digits"  # what `make train` writes
# Larger uploads are refused from their header, before anything decodes them. The models read 28-256 px images, so
# more pixels only cost memory: a 12-megapixel phone photo (4032x3024) passes, and the largest allowed image takes
# 64 MB as RGBA (the 17 KB bomb of 12000x12000 took 576 MB per copy).
MAX_PIXELS = 4096 * 4096
READABLE_FORMATS = "a PNG, JPEG or WebP image"
# PIL warns on opening an image over 89 M pixels; uploads are checked against the far smaller MAX_PIXELS right after.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
DISPLAY_SIZE = 224  # outputs are shown at least this large (nearest-neighbour upscaling)
MAX_SAMPLES = 16
REJECTION_CANDIDATES = 4  # samples drawn per image kept by rejection sampling
CONCURRENCY_LIMIT = 2  # requests of one event computed at once; the rest wait in the queue
UPLOADS = "uploads"  # the tabs that decode uploads share one CONCURRENCY_LIMIT, which bounds decoding memory
QUEUE_SIZE = 64
MAX_PENDING_EDITS = 2 * QUEUE_SIZE  # ImageEditor drafts kept until submitted (see PendingEdits)


class DemoError(gr.Error):
    """A message for the visitor (shown in the UI, never a stack trace)."""


@dataclass
class Demo:
    """The loaded models and what each tab does with them (plain functions, testable without a browser)."""

    model: torch.nn.Module
    processor: VQImageProcessor
    pipeline: VQVAE2Pipeline | None = None
    judge: ClassifierJudge | None = None
    model_id: str = ""

    @property
    def is_vae(self) -> bool:
        return family_for(self.model).kind == "vae"

    @property
    def num_levels(self) -> int:
        return 1 if self.is_vae else self.model.config.num_levels

    # ---------------------------------------------------------------------------------------------- inputs
    def prepare(self, value) -> tuple[torch.Tensor, list[str]]:
        """An upload / paste / drawing -> model pixels (1, C, H, W) and notes on what was changed."""
        image = to_pil(value)
        notes = []
        height, width = self.processor.size
        if image.size != (width, height):
            direction = "downscaled" if image.width * image.height > width * height else "upscaled"
            notes.append(f"{direction} from {image.width}x{image.height} to the model's {width}x{height}")
        wanted = "L" if self.model.config.num_channels == 1 else "RGB"
        if wanted == "L" and not _is_gray(image):
            notes.append("converted to grayscale (the model reads one channel)")
        elif wanted == "RGB" and _is_single_channel(image):
            notes.append("converted to RGB (the model reads three channels)")
        pixels = self.processor(to_model_mode(image, wanted), return_tensors="pt")["pixel_values"]
        return pixels.to(self.model.device, self.model.dtype), notes

    def to_image(self, pixels: torch.Tensor) -> Image.Image:
        return upscale(self.processor.postprocess(pixels.float().clamp(*self.processor.value_range)[:1])[0])

    # ---------------------------------------------------------------------------------------------- tabs
    @torch.no_grad()
    def reconstruct(self, value):
        """-> reconstruction, code maps (one per level), a markdown report, top-level-only reconstruction."""
        pixels, notes = self.prepare(value)
        if self.is_vae:
            reconstruction = self.model.decode(self.model.encode(pixels).mean).mean
            return self.to_image(reconstruction), [], self._report(pixels, reconstruction, notes, bits=None), None
        encoded = self.model.encode(pixels)
        reconstruction = self.model.decode(encoded.quantized)
        maps = [(code_map_image(codes[0], self.model.config.num_embeddings), f"level {level}: {tuple(codes.shape[-2:])}")
                for level, codes in enumerate(encoded.codes)]  # fmt: skip
        top_only = None
        if self.num_levels > 1:
            top = [q if level == 0 else torch.zeros_like(q) for level, q in enumerate(encoded.quantized)]
            top_only = self.to_image(self.model.decode(top))
        report = self._report(pixels, reconstruction, notes, bits=self._code_bits(encoded.codes))
        return self.to_image(reconstruction), maps, report, top_only

    def _code_bits(self, codes: list[torch.Tensor]) -> int:
        per_code = math.ceil(math.log2(self.model.config.num_embeddings))
        return sum(level.shape[-2] * level.shape[-1] for level in codes) * per_code

    def _report(self, pixels, reconstruction, notes, bits: int | None) -> str:
        """PSNR on [0, 1] pixels, the size of the codes vs the raw 8-bit image, and the input notes (markdown)."""
        low, high = self.processor.value_range
        unit = lambda x: ((x.float() - low) / (high - low)).clamp(0, 1)  # noqa: E731
        mse = float(((unit(reconstruction) - unit(pixels)) ** 2).mean())
        lines = [f"**PSNR** {10 * math.log10(1.0 / max(mse, 1e-12)):.2f} dB"]
        raw_bits = pixels[0].numel() * 8
        if bits is not None:
            lines.append(f"**codes** {bits:,} bits vs **raw image** {raw_bits:,} bits ({raw_bits / bits:.1f}x smaller)")
        lines += [f"_note: {note}_" for note in notes]
        return "  \n".join(lines)

    @torch.no_grad()
    def sample(self, class_label, temperature, top_k, top_p, seed, num_images, use_classifier=False,
               progress=gr.Progress()):  # fmt: skip
        """-> a gallery of samples and a message."""
        num_images = int(num_images)
        if not 1 <= num_images <= MAX_SAMPLES:
            raise DemoError(f"choose between 1 and {MAX_SAMPLES} images")
        sampler = self.model if self.is_vae or self.pipeline is None else self.pipeline
        generator = _generator(seed, sampler.device)
        if self.is_vae:
            images = self.model.sample(num_images, generator=generator)
            return [upscale(image) for image in self.processor.postprocess(images)], "samples from N(0, I) decoded"
        if self.pipeline is None:
            raise DemoError("this model has no prior, so it cannot sample: start the demo with --pipeline "
                            "(a VQVAE2Pipeline folder or Hub id) to enable the Sample tab")  # fmt: skip
        labels = self._labels(class_label, num_images)
        sampling = dict(temperature=float(temperature), top_k=int(top_k) or None, top_p=float(top_p) if top_p < 1 else None)
        if use_classifier:
            return self._rejection_sample(labels, num_images, generator, sampling, progress)
        images = []
        for index in progress.tqdm(range(num_images), desc="sampling"):
            one = None if labels is None else labels[index : index + 1]
            images += self.pipeline(1, class_labels=one, generator=generator, **sampling).images
        of_class = "" if labels is None else f" of class {self.class_name(labels[0])}"
        return [upscale(image) for image in images], f"{num_images} sample(s){of_class}, temperature {temperature}"

    def class_names(self) -> list[str] | None:
        """The prior's classes named by the classifier's `id2label` (CIFAR-10: airplane, ...), when it has as many."""
        if self.pipeline is None or self.judge is None:
            return None
        num_classes = self.pipeline.prior_level_0.config.num_classes
        id2label = {int(k): str(v) for k, v in self.judge.model.config.id2label.items()}
        return [id2label[i] for i in range(num_classes)] if num_classes and sorted(id2label) == list(range(num_classes)) else None

    def class_name(self, label: int) -> str:
        names = self.class_names()
        return f"{label} ({names[label]})" if names else str(label)

    def _labels(self, class_label, count: int) -> list[int] | None:
        num_classes = self.pipeline.prior_level_0.config.num_classes
        if not num_classes:
            return None
        if class_label is None or str(class_label).strip() == "":
            raise DemoError(f"the prior is class-conditional: choose a class in 0..{num_classes - 1}")
        label = int(class_label)
        if not 0 <= label < num_classes:
            raise DemoError(f"class {label} is out of range: choose one in 0..{num_classes - 1}")
        return [label] * count

    def _rejection_sample(self, labels, num_images, generator, sampling, progress):
        """The top quarter of 4x as many samples by the classifier's probability for the class (VQ-VAE-2 §3.3)."""
        if self.judge is None:
            raise DemoError("no classifier is configured: start the demo with --classifier to use rejection sampling")
        if labels is None:
            raise DemoError("rejection sampling needs a class-conditional prior")
        candidates = num_images * REJECTION_CANDIDATES
        result = rejection_sample(self.pipeline, self.judge, class_label=labels[0], num_samples=candidates,
                                  keep_fraction=1 / REJECTION_CANDIDATES, batch_size=1, generator=generator,
                                  progress=lambda batches: progress.tqdm(batches, desc="sampling candidates"),
                                  **sampling)  # fmt: skip
        kept = result["probabilities"][result["kept"]]
        images = self.pipeline.numpy_to_pil(result["images"].permute(0, 2, 3, 1).numpy())
        return [upscale(image) for image in images], (
            f"kept the {len(images)} most confident of {candidates} samples of class {self.class_name(labels[0])} "
            f"(acceptance rate {result['acceptance_rate']:.2f}); p(class {labels[0]}) of the kept: "
            f"{kept.min():.2f}..{kept.max():.2f}")

    @torch.no_grad()
    def interpolate(self, value_a, value_b, steps=7):
        """VAE: a latent path A -> B. VQ-VAE-2: mixed levels. VQ-VAE: a path between encoder outputs, quantized."""
        pixels_a, _ = self.prepare(value_a)
        pixels_b, _ = self.prepare(value_b)
        steps = int(steps)
        if not 2 <= steps <= 16:
            raise DemoError("choose between 2 and 16 steps")
        if self.is_vae:
            mean_a, mean_b = self.model.encode(pixels_a).mean, self.model.encode(pixels_b).mean
            weights = torch.linspace(0, 1, steps)
            images = [self.model.decode(torch.lerp(mean_a, mean_b, float(w))).mean for w in weights]
            return [(self.to_image(image), f"{float(w):.2f}") for image, w in zip(images, weights)]
        codes_a, codes_b = self.model.encode(pixels_a).codes, self.model.encode(pixels_b).codes
        if self.num_levels > 1:
            mixes = [("A", codes_a), ("top of A, lower levels of B", [codes_a[0], *codes_b[1:]]),
                     ("top of B, lower levels of A", [codes_b[0], *codes_a[1:]]), ("B", codes_b)]  # fmt: skip
            return [(self.to_image(self.model.decode_code(codes)), caption) for caption, codes in mixes]
        return self._quantized_path(pixels_a, pixels_b, steps)

    def _quantized_path(self, pixels_a, pixels_b, steps):
        features_a = self.model.pre_quantizers[0](self.model.encoders[0](pixels_a))
        features_b = self.model.pre_quantizers[0](self.model.encoders[0](pixels_b))
        images = []
        for weight in torch.linspace(0, 1, steps):
            codes = self.model.quantizers[0](torch.lerp(features_a, features_b, float(weight))).indices
            images.append((self.to_image(self.model.decode_code([codes])), f"{float(weight):.2f}"))
        return images

    @torch.no_grad()
    def inpaint(self, editor_value, class_label=None, temperature=1.0, seed=0):
        """Erase (paint over) a region; its codes are resampled by the prior. -> (before, after, message)."""
        if self.is_vae or self.pipeline is None:
            raise DemoError("inpainting resamples codes with a prior: start the demo with --pipeline")
        original = editor_value.get("background") if isinstance(editor_value, dict) else None
        pixels, notes = self.prepare(original if original is not None else editor_value)  # without the brush strokes
        mask = painted_mask(editor_value, tuple(self.processor.size))
        if not mask.any():
            raise DemoError("paint over the region to resample with the brush first")
        labels = self._labels(class_label, 1)
        generator = _generator(seed, self.pipeline.device)
        before = self.pipeline.reconstruct(pixels).images[0]
        after = self.pipeline.inpaint(pixels, mask[None], class_labels=labels, temperature=float(temperature),
                                      generator=generator).images[0]  # fmt: skip
        share = float(mask.float().mean())
        message = f"resampled the codes under {share:.0%} of the image" + "".join(f"; {n}" for n in notes)
        return upscale(before), upscale(after), message


# -------------------------------------------------------------------------------------------------- helpers
def _generator(seed, device: torch.device) -> torch.Generator:
    """A seeded generator on `device`, where the models draw their samples."""
    return torch.Generator(device=device).manual_seed(int(seed))


def to_pil(value) -> Image.Image:
    """An ImageEditor value (dict), a PIL image, an array or a file path -> a PIL image (any mode), size-checked."""
    if isinstance(value, dict):
        value = value.get("composite") if value.get("composite") is not None else value.get("background")
    if value is None:
        raise DemoError("upload, paste or draw an image first")
    if isinstance(value, (str, Path)):
        value = _open_image(value)
    elif isinstance(value, np.ndarray):
        value = Image.fromarray(value.astype(np.uint8) if value.dtype != np.uint8 else value)
    if not isinstance(value, Image.Image):
        raise DemoError(f"expected an image, got {type(value).__name__}")
    _check_size(value.width, value.height, "the image")
    return value


def _check_size(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise DemoError(f"{name} is too large ({width}x{height}, {width * height:,} pixels): use an image of at most "
                        f"{MAX_PIXELS:,} pixels (e.g. 4096x4096); the model reads small images anyway")  # fmt: skip


@contextlib.contextmanager
def _image_header(source: str | Path | bytes, name: str):
    """Open a file or bytes reading only the header; empty, non-image and too large files raise the demo's message."""
    try:
        if (len(source) if isinstance(source, bytes) else Path(source).stat().st_size) == 0:
            raise DemoError(f"{name} is empty (0 bytes): upload {READABLE_FORMATS}")
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as error:  # PIL refuses to even open images over 2 * MAX_IMAGE_PIXELS
        raise DemoError(f"{name} is too large (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels): use an image of at most "
                        f"{MAX_PIXELS:,} pixels (e.g. 4096x4096); the model reads small images anyway") from error
    except (UnidentifiedImageError, OSError) as error:
        raise DemoError(f"that file is not an image we can read ({name}): upload {READABLE_FORMATS}") from error
    with image:
        _check_size(image.width, image.height, name)
        yield image


def _undecodable(name: str) -> DemoError:
    return DemoError(f"{name} could not be decoded (it is truncated or corrupt): upload it again, or export it again "
                     f"as {READABLE_FORMATS}")  # fmt: skip


def _open_image(path) -> Image.Image:
    """Decode an image file once its header passed the checks, turned upright as its EXIF orientation says."""
    name = Path(path).name
    with _image_header(path, name) as image:
        try:
            image.load()
            return ImageOps.exif_transpose(image)  # a copy, so the file is closed
        except (OSError, SyntaxError, ValueError) as error:
            raise _undecodable(name) from error


def _is_gray(image: Image.Image) -> bool:
    """An image whose three channels are equal once flattened (what the editor makes of a grayscale upload)."""
    array = np.asarray(to_model_mode(image, "RGB"))
    return bool((array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all())


def _is_single_channel(image: Image.Image) -> bool:
    return image.mode != "P" and image.getbands()[0] in ("1", "L", "I", "F")


def painted_mask(editor_value, size: tuple[int, int]) -> torch.Tensor:
    """Where the ImageEditor's brush layers are opaque, at the model's (height, width): a bool tensor."""
    layers = editor_value.get("layers") if isinstance(editor_value, dict) else None
    height, width = size
    mask = np.zeros((height, width), dtype=bool)
    for layer in layers or []:
        layer = _open_image(layer) if isinstance(layer, (str, Path)) else layer
        if isinstance(layer, np.ndarray):
            layer = Image.fromarray(layer)
        alpha = layer.convert("RGBA").getchannel("A")  # resized and cropped exactly as the image is
        mask |= np.asarray(resize_and_center_crop(alpha, height, width, Image.Resampling.BOX)) > 0
    return torch.from_numpy(mask)


def code_map_image(codes: torch.Tensor, num_embeddings: int) -> Image.Image:
    """A (h, w) code map -> a colour image, one fixed colour per code (golden-ratio hues)."""
    palette = np.array([colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.65 + 0.35 * (k % 2), 0.95 - 0.3 * (k % 3) / 2)
                        for k in range(num_embeddings)]) * 255  # fmt: skip
    array = palette[codes.cpu().numpy()].astype(np.uint8)
    return upscale(Image.fromarray(array, mode="RGB"))


def upscale(image: Image.Image) -> Image.Image:
    factor = max(1, math.ceil(DISPLAY_SIZE / max(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


# -------------------------------------------------------------------------------------------------- loading
def load_demo(model_id: str | None, pipeline_id: str | None = None, classifier_id: str | None = None,
              device: str | torch.device | None = None) -> Demo:  # fmt: skip
    """Load the model (default: the pipeline's VQ-VAE, else what `make train` writes), the pipeline and the judge, on
    `device` (default: cuda when available, else cpu; an unavailable one is a ValueError that names those there)."""
    device = resolve_device(device)
    pipeline = VQVAE2Pipeline.from_pretrained(pipeline_id).to(device) if pipeline_id else None
    if model_id is None and pipeline is not None:
        model, model_id = pipeline.vqvae, pipeline_id
    else:
        model_id = model_id or DEFAULT_MODEL
        if model_id == DEFAULT_MODEL and not Path(model_id).exists():
            raise SystemExit(f"{model_id} does not exist: train one with `make train` (it writes {DEFAULT_MODEL}), "
                             "or pass --model with a saved model folder or Hub id")  # fmt: skip
        model = AutoModel.from_pretrained(model_id).to(device)
    judge = ClassifierJudge.from_pretrained(classifier_id) if classifier_id else None
    if judge is not None:
        judge.model.to(device)
    return Demo(model=model.eval(), processor=_processor(model_id, model.config), pipeline=pipeline, judge=judge,
                model_id=model_id)  # fmt: skip


def _processor(model_id: str, config) -> VQImageProcessor:
    try:
        return VQImageProcessor.from_pretrained(model_id)
    except (OSError, ValueError):
        return VQImageProcessor.from_model_config(config)


# -------------------------------------------------------------------------------------------------- upload guard
def guard_uploads(component):
    """Check each uploaded image's header in the component's preprocessing, before Gradio decodes it.

    Gradio decodes uploads in `preprocess`, before the event function runs: the ImageEditor always (it converts each
    part to its image_mode), gr.Image unless type="filepath" and image_mode=None, and a data: URL always. A size check
    in the event function came too late: a 17 KB PNG decoded to 576 MB per copy, and the server kept that memory.
    Files that pass the header check but fail to decode get the demo's message too, not Gradio's generic error.
    """
    preprocess = component.preprocess

    @functools.wraps(preprocess)
    def checked_preprocess(payload):
        uploads = _uploaded_files(component, payload)
        for name, source in uploads:
            with _image_header(source, name):  # raises the demo's message unless the header is fine
                pass
        try:
            return preprocess(payload)
        except (OSError, SyntaxError) as error:
            raise _undecodable(" or ".join(sorted({name for name, _ in uploads})) or "the upload") from error

    component.preprocess = checked_preprocess
    if hasattr(component, "blob_storage"):  # gr.ImageEditor
        component.blob_storage = PendingEdits(MAX_PENDING_EDITS)
    return component


def _uploaded_files(component, payload) -> list[tuple[str, str | bytes]]:
    """(name, path or bytes) of each image in a gr.Image or gr.ImageEditor payload."""
    if payload is None:
        return []
    if not hasattr(payload, "layers"):  # gr.Image: an uploaded file or a data: URL
        parts = [("the image", payload)]
    else:
        if payload.id is not None:  # the browser sent the canvas ahead, as bytes (see PendingEdits)
            if payload.id not in component.blob_storage:
                raise DemoError(f"this edit is no longer on the server (it keeps the latest {MAX_PENDING_EDITS} "
                                "edits): change the image again, then press the button")  # fmt: skip
            payload = component.blob_storage[payload.id]
        layers = [(f"layer {index}", layer) for index, layer in enumerate(payload.layers, 1)]
        parts = [("the background", payload.background), *layers, ("the composite", payload.composite)]
    return [_name_and_source(part, name) for name, part in parts if part is not None]


def _name_and_source(part, name: str) -> tuple[str, str | bytes]:
    if isinstance(part, bytes):
        return name, part
    if part.path is not None:
        return part.orig_name or Path(part.path).name, part.path
    if not str(part.url or "").startswith("data:"):
        raise DemoError(f"{name} came without a file (the demo fetches no URLs): upload {READABLE_FORMATS}")
    try:
        return name, base64.b64decode(part.url.rsplit(",", 1)[-1])
    except (binascii.Error, ValueError) as error:
        raise DemoError(f"{name} is a data URL that is not base64: upload {READABLE_FORMATS}") from error


class PendingEdits(collections.OrderedDict):
    """The ImageEditor's drafts, the newest `limit` of them.

    Each time the canvas changes, the browser sends it ahead (`accept_blobs`: background, layers and composite as PNG
    bytes) under a new random id, and Gradio keeps each draft until its id is submitted: the drafts of every earlier
    change, and of edits never submitted, stayed in memory for good.
    """

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


# -------------------------------------------------------------------------------------------------- UI
class OutputFiles:
    """Writes output images to unique PNG files for Gradio to serve.

    Gradio caches a returned PIL image under a hash of its bytes and rewrites that file on every request, so two
    visitors with the same result race: one download is truncated while the other request rewrites it. A returned
    path is copied into the cache atomically instead. The newest `keep` files are kept; older ones are deleted.
    """

    def __init__(self, keep: int = 512):
        self.folder = Path(tempfile.mkdtemp(prefix="hf_vqvae-demo-"))
        self.keep, self.paths, self.lock = keep, collections.deque(), threading.Lock()

    def convert(self, value):
        if isinstance(value, Image.Image):
            return self._write(value)
        if isinstance(value, (list, tuple)):
            return type(value)(self.convert(item) for item in value)
        return value

    def _write(self, image: Image.Image) -> str:
        path = self.folder / f"{uuid.uuid4().hex}.png"
        image.save(path)
        with self.lock:
            self.paths.append(path)
            while len(self.paths) > self.keep:
                self.paths.popleft().unlink(missing_ok=True)
        return str(path)

    def wrap(self, function):
        @functools.wraps(function)  # keeps the signature, so Gradio still injects gr.Progress
        def wrapper(*args, **kwargs):
            return self.convert(function(*args, **kwargs))

        return wrapper


def build_app(demo: Demo) -> gr.Blocks:
    files = OutputFiles()
    with gr.Blocks(title="hf_vqvae demo") as app:
        gr.Markdown(f"# hf_vqvae: {type(demo.model).__name__}\n`{demo.model_id}`; "
                    f"sampling {'enabled' if demo.pipeline is not None or demo.is_vae else 'needs --pipeline'}")  # fmt: skip
        _reconstruct_tab(files.wrap(demo.reconstruct))
        _sample_tab(files.wrap(demo.sample), demo.class_names())
        _interpolate_tab(files.wrap(demo.interpolate))
        _inpaint_tab(files.wrap(demo.inpaint))
    app.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return app


def _editor(label: str, **kwargs) -> gr.ImageEditor:
    """The editor decodes every part whatever its type, so "pil" (the decoded image) saves the round trip a "filepath"
    would add (encode to the cache, decode again); guard_uploads checks each part's header before that decoding."""
    editor = gr.ImageEditor(label=label, type="pil", sources=("upload", "clipboard"), image_mode="RGBA",
                            brush=gr.Brush(default_size=12, colors=["#ffffff", "#000000"], color_mode="defaults"),
                            canvas_size=(280, 280), **kwargs)  # fmt: skip
    return guard_uploads(editor)


def _image_input(label: str) -> gr.Image:
    """Gradio hands over the uploaded file's path without decoding it (type="filepath", image_mode=None)."""
    return guard_uploads(gr.Image(label=label, type="filepath", image_mode=None, sources=("upload", "clipboard")))


def _reconstruct_tab(reconstruct) -> None:
    with gr.Tab("Reconstruct"):
        with gr.Row():
            source = _editor("Image: upload, paste or draw (white strokes on black)", elem_id="reconstruct-input")
            output = gr.Image(label="Reconstruction", type="pil", elem_id="reconstruct-output")
        button = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-button")
        with gr.Row():
            maps = gr.Gallery(label="Code maps (one colour per code), top level first", columns=3)
            top_only = gr.Image(label="From the top level alone (VQ-VAE-2)", type="pil")
        report = gr.Markdown()
        button.click(reconstruct, source, [output, maps, report, top_only], api_name="reconstruct",
                     concurrency_id=UPLOADS)  # fmt: skip


def _sample_tab(sample, class_names: list[str] | None = None) -> None:
    with gr.Tab("Sample"):
        with gr.Row():
            info = ", ".join(f"{index}: {name}" for index, name in enumerate(class_names)) if class_names else None
            label = gr.Number(label="class", value=0, precision=0, info=info)
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="temperature")
            top_k = gr.Slider(0, 512, value=0, step=1, label="top-k (0: off)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (1: off)")
        with gr.Row():
            seed = gr.Number(label="seed", value=0, precision=0)
            count = gr.Slider(1, MAX_SAMPLES, value=4, step=1, label="images")
            use_classifier = gr.Checkbox(label="rejection sampling (needs --classifier)", value=False)
        button = gr.Button("Sample", variant="primary", elem_id="sample-button")
        gallery, message = gr.Gallery(label="Samples", columns=4, elem_id="sample-gallery"), gr.Markdown(elem_id="sample-message")
        button.click(sample, [label, temperature, top_k, top_p, seed, count, use_classifier], [gallery, message],
                     api_name="sample")  # fmt: skip


def _interpolate_tab(interpolate) -> None:
    with gr.Tab("Interpolate"):
        with gr.Row():
            image_a, image_b = _image_input("A"), _image_input("B")
        steps = gr.Slider(2, 16, value=7, step=1, label="steps (VAE / VQ-VAE path)")
        button = gr.Button("Interpolate", variant="primary")
        gallery = gr.Gallery(label="A -> B", columns=7)
        button.click(interpolate, [image_a, image_b, steps], gallery, api_name="interpolate", concurrency_id=UPLOADS)


def _inpaint_tab(inpaint) -> None:
    with gr.Tab("Inpaint"):
        editor = _editor("Upload an image, then paint over the region to resample")
        with gr.Row():
            label = gr.Number(label="class (class-conditional priors)", value=0, precision=0)
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="temperature")
            seed = gr.Number(label="seed", value=0, precision=0)
        button = gr.Button("Inpaint", variant="primary")
        with gr.Row():
            before, after = gr.Image(label="Before", type="pil"), gr.Image(label="After", type="pil")
        message = gr.Markdown()
        button.click(inpaint, [editor, label, temperature, seed], [before, after, message], api_name="inpaint",
                     concurrency_id=UPLOADS)  # fmt: skip


def space_model_ids(readme: Path = Path(__file__).with_name("README.md")) -> list[str | None]:
    """The `models:` of the Space header (model, pipeline, classifier), padded with None."""
    if not readme.is_file():
        return [None, None, None]
    header = readme.read_text().split("---")
    models = (yaml.safe_load(header[1]) or {}).get("models", []) if len(header) > 2 else []
    return (list(models) + [None, None, None])[:3]


def parse_args(argv=None) -> argparse.Namespace:
    space = space_model_ids() if os.environ.get("SPACE_ID") else [None, None, None]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("HF_VQVAE_MODEL", space[0]),
                        help=f"a VQ-VAE / VQ-VAE-2 / VAE folder or Hub id (default: the pipeline's, else {DEFAULT_MODEL})")
    parser.add_argument("--pipeline", default=os.environ.get("HF_VQVAE_PIPELINE", space[1]), help="a VQVAE2Pipeline")
    parser.add_argument("--classifier", default=os.environ.get("HF_VQVAE_CLASSIFIER", space[2]),
                        help="an image classifier for rejection sampling")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    add_device_argument(parser)
    return parser.parse_args(argv)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def return_freed_memory_to_the_system(threshold: int = 1 << 20) -> bool:
    """Give each allocation of `threshold` bytes or more its own mmap, so that freeing it returns the memory at once.

    glibc raises its mmap threshold (up to 32 MB) each time such a block is freed; after that, decoded images live in
    the heap arenas of Gradio's worker threads, and their memory stays with the process after the request (measured:
    +430 MB after 6 + 8 uploads of 4096x4096, growing; flat with a fixed threshold). Does nothing without glibc.
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def main(argv=None) -> None:
    args = parse_args(argv)
    return_freed_memory_to_the_system()
    demo = load_demo(args.model, args.pipeline, args.classifier, device=args.device)
    build_app(demo).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
