"""spaces_demo/app.py: the tab functions, the app over HTTP through gradio_client, a load test, a real browser."""

import os
import shutil
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e .[demo]")
from gradio_client import Client, handle_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "spaces_demo"))
import app as demo_app  # noqa: E402

from hf_vqvae import (  # noqa: E402
    PixelCNNPriorConfig,
    PixelCNNPriorModel,
    VAEConfig,
    VAEModel,
    VQImageProcessor,
    VQVAE2Config,
    VQVAE2Model,
    VQVAE2Pipeline,
    VQVAEConfig,
    VQVAEModel,
)

# One xdist worker runs this whole file in order (`make test` uses --dist loadgroup): spread over two workers, the
# browser test was seen to time out waiting for its reconstruction (the editor had not taken the upload).
pytestmark = pytest.mark.xdist_group("demo")

SCREENSHOT_COPY = os.environ.get("HF_VQVAE_DEMO_SCREENSHOT")  # set to also keep the browser test's screenshot


def _save(model, folder):
    model.save_pretrained(folder)
    VQImageProcessor.from_model_config(model.config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained tiny models: a 2-level VQ-VAE-2 with class-conditional priors (a pipeline), a VQ-VAE, a VAE."""
    root = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    vq2 = VQVAE2Model(VQVAE2Config(num_channels=1, image_size=16, hidden_channels=16, residual_channels=8,
                                   num_residual_blocks=1, level_downsamples=[1, 1], num_embeddings=16, embedding_dim=4))  # fmt: skip
    shapes = vq2.config.latent_shapes()
    top = PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=16, hidden_channels=8, num_layers=2, num_classes=10,
                                                 code_shape=list(shapes[0])))  # fmt: skip
    bottom = PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=16, hidden_channels=8, num_layers=2, num_classes=10,
                                                    code_shape=list(shapes[1]), condition_num_embeddings=16,
                                                    condition_hidden_channels=8, condition_num_residual_blocks=1))  # fmt: skip
    VQVAE2Pipeline(vqvae=vq2, prior_level_0=top, prior_level_1=bottom).save_pretrained(root / "pipeline")
    _save(vq2, root / "vqvae2")
    _save(VQVAEModel(VQVAEConfig(num_channels=1, image_size=16, hidden_channels=16, residual_channels=8,
                                 num_residual_blocks=1, num_downsamples=2, num_embeddings=16, embedding_dim=4)),
          root / "vqvae")  # fmt: skip
    _save(VAEModel(VAEConfig.from_preset("mnist-paper", image_size=16, hidden_size=32, latent_dim=4)), root / "vae")
    digit = Image.fromarray((np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8), mode="L")
    digit.save(root / "digit.png")
    Image.new("RGB", (16, 16), (200, 40, 40)).save(root / "red.png")
    from sklearn.datasets import load_digits

    seven = (load_digits().images[7] * (255 / 16)).astype(np.uint8)  # a real 8x8 digit, shown larger
    Image.fromarray(seven, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(root / "seven.png")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def demo(models):
    return demo_app.load_demo(str(models / "vqvae2"), str(models / "pipeline"))


def test_reconstruct_reports_psnr_bits_and_code_maps(demo, models):
    image, maps, report, top_only = demo.reconstruct(str(models / "digit.png"))
    assert image.size == (224, 224) and top_only.size == (224, 224)
    assert [caption for _, caption in maps] == ["level 0: (4, 4)", "level 1: (8, 8)"]
    assert maps[0][0].mode == "RGB"
    # 16 + 64 codes of 4 bits vs a 16x16 8-bit image
    assert "**codes** 320 bits vs **raw image** 2,048 bits (6.4x smaller)" in report
    assert "downscaled from 30x40 to the model's 16x16" in report
    pixels, _ = demo.prepare(str(models / "digit.png"))
    with torch.no_grad():
        expected = demo.model(pixels).reconstruction
    low = ((expected.clamp(-1, 1) + 1) / 2 - (pixels + 1) / 2).pow(2).mean()
    assert f"**PSNR** {10 * np.log10(1 / float(low)):.2f} dB" in report


def test_bad_inputs_give_friendly_messages(demo, models):
    with pytest.raises(gr.Error, match="upload, paste or draw an image first"):
        demo.reconstruct(None)
    with pytest.raises(gr.Error, match="not an image we can read \\(notes.txt\\)"):
        demo.reconstruct(str(models / "notes.txt"))
    _, _, report, _ = demo.reconstruct(str(models / "red.png"))
    assert "converted to grayscale" in report
    with pytest.raises(gr.Error, match="too large"):
        demo_app.to_pil(np.zeros((1, demo_app.MAX_PIXELS + 1), dtype=np.uint8))


def test_sample_needs_a_prior_and_a_valid_class(demo, models):
    gallery, message = demo.sample(3, 1.0, 0, 1.0, 0, 2)
    assert len(gallery) == 2 and gallery[0].size == (224, 224) and "2 sample(s)" in message
    again, _ = demo.sample(3, 1.0, 0, 1.0, 0, 2)
    assert np.array_equal(np.asarray(gallery[1]), np.asarray(again[1]))  # the seed fixes the samples
    with pytest.raises(gr.Error, match="class 12 is out of range: choose one in 0..9"):
        demo.sample(12, 1.0, 0, 1.0, 0, 1)
    with pytest.raises(gr.Error, match="no classifier is configured"):
        demo.sample(3, 1.0, 0, 1.0, 0, 1, True)
    without_prior = demo_app.load_demo(str(models / "vqvae"))
    with pytest.raises(gr.Error, match="this model has no prior.*--pipeline"):
        without_prior.sample(0, 1.0, 0, 1.0, 0, 1)
    vae_gallery, vae_message = demo_app.load_demo(str(models / "vae")).sample(None, 1.0, 0, 1.0, 0, 3)
    assert len(vae_gallery) == 3 and "N(0, I)" in vae_message


def test_interpolate_mixes_levels_or_walks_a_latent_path(demo, models):
    mixed = demo.interpolate(str(models / "digit.png"), str(models / "red.png"))
    assert [caption for _, caption in mixed] == ["A", "top of A, lower levels of B", "top of B, lower levels of A", "B"]
    path = demo_app.load_demo(str(models / "vae")).interpolate(str(models / "digit.png"), str(models / "red.png"), 5)
    assert [caption for _, caption in path] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    vq_path = demo_app.load_demo(str(models / "vqvae")).interpolate(str(models / "digit.png"), str(models / "red.png"), 3)
    single = demo_app.load_demo(str(models / "vqvae"))
    ends = single.reconstruct(str(models / "digit.png"))[0]
    assert np.array_equal(np.asarray(vq_path[0][0]), np.asarray(ends))  # the path starts at A's reconstruction


def test_inpaint_resamples_the_painted_region(demo, models):
    background = Image.open(models / "digit.png").convert("RGBA").resize((16, 16))
    layer = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (0, 8, 16, 16))  # the lower half
    value = {"background": background, "layers": [layer], "composite": background}
    before, after, message = demo.inpaint(value, 4, 1.0, 0)
    assert "under 50% of the image" in message
    before, after = np.asarray(before), np.asarray(after)
    assert before.shape == after.shape == (224, 224)
    with pytest.raises(gr.Error, match="paint over the region"):
        demo.inpaint({"background": background, "layers": [], "composite": background}, 4, 1.0, 0)


def test_on_a_space_the_models_come_from_the_readme_header(monkeypatch):
    monkeypatch.delenv("HF_VQVAE_MODEL", raising=False)
    assert demo_app.parse_args([]).model is None  # locally: the model `make train` writes (see load_demo)
    monkeypatch.setenv("SPACE_ID", "org/demo")
    args = demo_app.parse_args([])
    assert [args.model, args.pipeline, args.classifier] == demo_app.space_model_ids()
    assert args.model == "hf-vqvae/vqvae-mnist" and args.pipeline == "hf-vqvae/vqvae-mnist-pipeline"
    monkeypatch.setenv("HF_VQVAE_MODEL", "org/other")
    assert demo_app.parse_args([]).model == "org/other"
    assert demo_app.parse_args(["--model", "local/folder"]).model == "local/folder"


def test_missing_default_model_says_how_to_make_one(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="make train"):
        demo_app.load_demo(None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(demo):
    app = demo_app.build_app(demo)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def _editor_value(path):
    return {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path))}


def test_every_tab_answers_through_gradio_client(served, models):
    client = Client(served, verbose=False)
    image, maps, report, top_only = client.predict(_editor_value(models / "digit.png"), api_name="/reconstruct")
    assert Image.open(image).size == (224, 224) and len(maps) == 2 and "PSNR" in report
    gallery, message = client.predict(2, 1.0, 0, 1.0, 0, 2, False, api_name="/sample")
    assert len(gallery) == 2 and "2 sample(s)" in message
    mixed = client.predict(handle_file(str(models / "digit.png")), handle_file(str(models / "red.png")), 7,
                           api_name="/interpolate")  # fmt: skip
    assert len(mixed) == 4
    mask_path = models / "mask.png"
    mask = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (0, 0, 16, 4))
    mask.save(mask_path)
    value = {"background": handle_file(str(models / "digit.png")), "layers": [handle_file(str(mask_path))],
             "composite": handle_file(str(models / "digit.png"))}  # fmt: skip
    before, after, message = client.predict(value, 1, 1.0, 0, api_name="/inpaint")
    assert Path(before).is_file() and Path(after).is_file() and "resampled the codes" in message
    with pytest.raises(Exception, match="class 99 is out of range"):
        client.predict(99, 1.0, 0, 1.0, 0, 1, False, api_name="/sample")


def test_concurrent_clients_get_no_errors(served, models, record_property):
    """8 clients x 7 requests against /reconstruct: every one answers; median and worst latency are reported."""
    latencies, errors = [], []
    lock = threading.Lock()

    def visitor():
        client = Client(served, verbose=False)
        for _ in range(7):
            start = time.perf_counter()
            try:
                client.predict(_editor_value(models / "digit.png"), api_name="/reconstruct")
            except Exception as error:  # noqa: BLE001 (collected and asserted below)
                with lock:
                    errors.append(repr(error))
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=visitor) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors[:3]
    assert len(latencies) == 56
    median, worst = statistics.median(latencies), max(latencies)
    record_property("reconstruct_latency_median_s", round(median, 3))
    record_property("reconstruct_latency_worst_s", round(worst, 3))
    print(f"\n/reconstruct under 8 concurrent clients, 56 requests: median {median:.3f} s, worst {worst:.3f} s")


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# Run apart from the rest (`make test` runs `-m browser` on its own after the parallel suite): inside the full suite,
# after this session's additions, the editor was seen not to take the upload (a reconstruction timeout), while the
# test passes on its own every time; the cause is not found yet.
@pytest.mark.browser
def test_reconstruct_in_a_real_browser(served, models, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium package (see .ci/run)")
    screenshot = tmp_path / "demo.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(served, wait_until="networkidle")
        page.locator("#reconstruct-input input[type=file]").first.set_input_files(str(models / "seven.png"))
        page.wait_for_load_state("networkidle")  # the upload request has finished
        page.locator("#reconstruct-button").click()
        page.locator("#reconstruct-output img").first.wait_for(state="visible", timeout=60_000)
        page.screenshot(path=str(screenshot), full_page=True)
        page.get_by_role("tab", name="Sample").click()
        page.locator("#sample-button").click()
        page.locator("#sample-gallery img").first.wait_for(state="visible", timeout=60_000)
        assert page.locator("#sample-gallery img").count() >= 4  # the tab's default: 4 images
        assert "4 sample(s) of class 0" in page.locator("#sample-message").inner_text()
        browser.close()
    assert screenshot.stat().st_size > 10_000
    if SCREENSHOT_COPY:
        shutil.copy(screenshot, SCREENSHOT_COPY)


def test_rejection_sampling_keeps_the_classifiers_most_confident(demo, models):
    from transformers import ResNetConfig, ResNetForImageClassification

    from hf_vqvae.pipelines import ClassifierJudge

    torch.manual_seed(0)
    classifier = ResNetForImageClassification(ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 8],
                                                           depths=[1, 1], num_labels=10, layer_type="basic"))  # fmt: skip
    judged = demo_app.Demo(model=demo.model, processor=demo.processor, pipeline=demo.pipeline,
                           judge=ClassifierJudge(classifier, image_mean=[0.5], image_std=[0.5]))  # fmt: skip
    gallery, message = judged.sample(3, 1.0, 0, 1.0, 0, 2, True)
    assert len(gallery) == 2 and "kept the 2 most confident of 8 samples" in message
    low, high = (float(x) for x in message.rsplit(": ", 1)[1].split(".."))
    assert 0 <= low <= high <= 1


def test_the_inpainting_mask_is_cropped_like_the_image():
    """A wide image is centre-cropped to the model's square: strokes outside the crop mask nothing."""
    layer = Image.new("RGBA", (64, 16), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (0, 0, 16, 16))  # left edge: cropped away
    assert not demo_app.painted_mask({"layers": [layer]}, (16, 16)).any()
    layer.paste((255, 255, 255, 255), (24, 0, 32, 16))  # the left half of the centre crop (columns 24..40)
    mask = demo_app.painted_mask({"layers": [layer]}, (16, 16))
    assert mask[:, :8].all() and not mask[:, 8:].any()


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar10_demo(tmp_path_factory):
    """The layout of the CIFAR-10 pipeline of benchmarks/samples_cifar10.py (the `cifar10` VQ-VAE-2, 4x4 top and 8x8
    bottom codes, the two class-conditional prior presets) at a tiny width, with a classifier that names the classes."""
    from transformers import ResNetConfig, ResNetForImageClassification

    root = tmp_path_factory.mktemp("cifar10_demo")
    torch.manual_seed(0)
    vq2 = VQVAE2Model(VQVAE2Config.from_preset("cifar10", hidden_channels=16, residual_channels=8, num_residual_blocks=1,
                                               num_embeddings=16, embedding_dim=4))  # fmt: skip
    small = dict(num_embeddings=16, hidden_channels=8, num_layers=2)
    top = PixelCNNPriorModel(PixelCNNPriorConfig.from_preset("vqvae2-cifar10-top", **small, num_attention_layers=1))
    bottom = PixelCNNPriorModel(PixelCNNPriorConfig.from_preset("vqvae2-cifar10-bottom", **small, condition_num_embeddings=16,
                                                                condition_hidden_channels=8))  # fmt: skip
    VQVAE2Pipeline(vqvae=vq2, prior_level_0=top, prior_level_1=bottom).save_pretrained(root / "pipeline")
    classifier = ResNetForImageClassification(ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1], layer_type="basic", num_labels=10,
        id2label=dict(enumerate(CIFAR10_CLASSES)), label2id={name: i for i, name in enumerate(CIFAR10_CLASSES)}))  # fmt: skip
    classifier.save_pretrained(root / "classifier")
    return demo_app.load_demo(None, str(root / "pipeline"), str(root / "classifier"))


def test_the_sample_tab_draws_class_conditional_cifar10_images_named_by_the_classifier(cifar10_demo):
    """`app.py --pipeline outputs/samples-cifar10/pipeline-vqvae2 --classifier outputs/samples-cifar10/judge`."""
    assert cifar10_demo.class_names() == CIFAR10_CLASSES
    cats, message = cifar10_demo.sample(3, 1.0, 0, 1.0, 0, 2)
    assert len(cats) == 2 and message == "2 sample(s) of class 3 (cat), temperature 1.0"
    assert all(image.mode == "RGB" and image.size == demo_app.upscale(Image.new("RGB", (32, 32))).size for image in cats)
    # the class reaches the priors: the same seed and another class draw other images
    ships, message = cifar10_demo.sample(8, 1.0, 0, 1.0, 0, 2)
    assert "class 8 (ship)" in message
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(cats, ships))
    again, _ = cifar10_demo.sample(3, 1.0, 0, 1.0, 0, 2)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(cats, again))
    kept, message = cifar10_demo.sample(3, 1.0, 0, 1.0, 0, 1, True)
    assert len(kept) == 1 and "of class 3 (cat)" in message
    with pytest.raises(gr.Error, match=r"class 10 is out of range: choose one in 0\.\.9"):
        cifar10_demo.sample(10, 1.0, 0, 1.0, 0, 1)
