"""Hostile uploads to the demo (issue 13, point 1 and the demo parts of point 9).

Decompression bombs are refused from their header, before anything decodes them, so the server's memory stays flat
across repeated and concurrent bomb uploads; non-image, empty, truncated and bomb files get the demo's own message;
uploads and drawings are flattened to the model's mode by the same function as in training.
"""

import base64
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Empty, Queue

import numpy as np
import PIL.ImageFile
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e .[demo]")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "spaces_demo" / "app.py"
sys.path.insert(0, str(APP.parent))
import app as demo_app  # noqa: E402

from hf_vqvae import VQImageProcessor, VQVAEConfig, VQVAEModel  # noqa: E402
from hf_vqvae.image_processing import to_model_mode  # noqa: E402

# The bombs are opened on purpose (PIL warns about each); the demo process itself ignores the warning.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

BOMB_SIDE = 12_000  # the bomb: 144 M pixels in ~20 KB
MAX_PIXELS = demo_app.MAX_PIXELS


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """A black 1-bit grayscale PNG of any size, written row by row (a 12000x12000 one is ~20 KB on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)  # filter byte 0, then zero bits
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit per pixel, grayscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny 1-channel VQ-VAE saved with its processor, a small image, and the hostile uploads."""
    root = tmp_path_factory.mktemp("hostile-demo")
    torch.manual_seed(0)
    model = VQVAEModel(VQVAEConfig(num_channels=1, image_size=16, hidden_channels=16, residual_channels=8,
                                   num_residual_blocks=1, num_downsamples=2, num_embeddings=16, embedding_dim=4))  # fmt: skip
    model.save_pretrained(root / "vqvae")
    VQImageProcessor.from_model_config(model.config).save_pretrained(root / "vqvae")
    noise = (np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)
    Image.fromarray(noise, mode="L").save(root / "digit.png")
    write_blank_png(root / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    write_blank_png(root / "giant.png", 16_000, 16_000)  # 256 M pixels: over PIL's own limit, which raises on open
    (root / "notes.txt").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.png").write_bytes((root / "digit.png").read_bytes()[:200])  # a valid header, cut-off pixels
    return root


@pytest.fixture(scope="module")
def demo(files):
    return demo_app.load_demo(str(files / "vqvae"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(demo):
    return demo_app.build_app(demo)


@pytest.fixture(scope="module")
def served(app):
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def client(served):
    return Client(served, verbose=False)


def _editor_value(path: Path) -> dict:
    return {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path))}


def _upload(client: Client, endpoint: str, path: Path, files: Path):
    """Send `path` where the endpoint takes an upload: the Reconstruct tab's editor or the Interpolate tab's image A."""
    if endpoint == "/reconstruct":
        return client.predict(_editor_value(path), api_name="/reconstruct")
    return client.predict(handle_file(str(path)), handle_file(str(files / "digit.png")), 3, api_name="/interpolate")


# ---------------------------------------------------------------------------------------------------- the bomb
@pytest.fixture
def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size of every image file decoded in this process (the in-process server included) during the test."""
    sizes, original_load = [], PIL.ImageFile.ImageFile.load

    def recording_load(image):
        sizes.append(image.size)
        return original_load(image)

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", recording_load)  # every decode of a file goes through it
    return sizes


@pytest.mark.parametrize("endpoint", ["/reconstruct", "/interpolate"])
def test_a_bomb_is_refused_from_its_header_before_anything_decodes_it(client, files, endpoint, decoded_sizes):
    """Before: Gradio decoded the 17 KB PNG to 144 M pixels (576 MB as RGBA), and then the app checked its size."""
    bomb = files / "bomb.png"
    with Image.open(bomb) as header:
        assert (header.size, header.mode) == ((BOMB_SIDE, BOMB_SIDE), "1") and bomb.stat().st_size < 100_000
    message = f"bomb.png is too large (12000x12000, 144,000,000 pixels): use an image of at most {MAX_PIXELS:,} "
    with pytest.raises(AppError, match=re.escape(message)):
        _upload(client, endpoint, bomb, files)
    assert (BOMB_SIDE, BOMB_SIDE) not in decoded_sizes
    assert MAX_PIXELS <= 25_000_000  # the models read 28-256 px images: the demo needs no more


# ---------------------------------------------------------------------------------------------------- messages
UNREADABLE = {  # the upload -> the demo's message
    "notes.txt": "that file is not an image we can read (notes.txt): upload a PNG, JPEG or WebP image",
    "empty.png": "empty.png is empty (0 bytes): upload a PNG, JPEG or WebP image",
    "truncated.png": "truncated.png could not be decoded (it is truncated or corrupt): upload it again, or export it "
    "again as a PNG, JPEG or WebP image",
    # PIL itself refuses to open images over twice its MAX_IMAGE_PIXELS (2 x 89 M)
    "giant.png": f"giant.png is too large (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels): use an image of at most "
    f"{MAX_PIXELS:,} pixels",
}


@pytest.mark.parametrize("endpoint", ["/reconstruct", "/interpolate"])
@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_uploads_get_the_demos_own_message(client, files, endpoint, name):
    """Before: Gradio's own error ("Expected a `ImageData | None`, but the value passed to the event handler was:
    {...}"): its preprocessing failed before the app's checks ran."""
    with pytest.raises(AppError, match=re.escape(UNREADABLE[name])):
        _upload(client, endpoint, files / name, files)


def test_a_bomb_sent_as_a_data_url_is_refused_from_its_header(client, files, decoded_sizes):
    """gr.Image also accepts {"url": "data:..."} (no file upload), which Gradio decoded before the app's check."""
    data_url = "data:image/png;base64," + base64.b64encode((files / "bomb.png").read_bytes()).decode()
    with pytest.raises(AppError, match=r"the image is too large \(12000x12000"):
        client.predict({"url": data_url}, handle_file(str(files / "digit.png")), 3, api_name="/interpolate")
    assert (BOMB_SIDE, BOMB_SIDE) not in decoded_sizes


def test_a_missing_image_asks_for_one(client, files):
    for empty_editor in [{"background": None, "layers": [], "composite": None}, None]:
        with pytest.raises(AppError, match="upload, paste or draw an image first"):
            client.predict(empty_editor, api_name="/reconstruct")
    with pytest.raises(AppError, match="upload, paste or draw an image first"):
        client.predict(None, handle_file(str(files / "digit.png")), 3, api_name="/interpolate")


def test_valid_uploads_still_work(client, files):
    image, maps, report, _ = _upload(client, "/reconstruct", files / "digit.png", files)
    assert Image.open(image).size == (224, 224) and len(maps) == 1 and "downscaled from 30x40" in report
    path = _upload(client, "/interpolate", files / "digit.png", files)
    assert [item["caption"] for item in path] == ["0.00", "0.50", "1.00"]


# ---------------------------------------------------------------------------------------------------- drafts
def _editors(app) -> list:
    editors = [block for block in app.blocks.values() if isinstance(block, gr.ImageEditor)]
    assert len(editors) == 2  # Reconstruct and Inpaint
    return editors


def _send_draft(editor, draft_id: str, png: bytes) -> None:
    """What the browser does after each change of the canvas (POST /component_server, fn_name accept_blobs)."""
    from gradio.components.image_editor import AcceptBlobs

    data = {"type": "composite", "index": None, "file": b"", "id": draft_id}
    editor.accept_blobs(AcceptBlobs(data=data, files=[("file", png)]))


def test_abandoned_editor_drafts_are_not_kept_forever(app, files):
    """Gradio kept every draft until its id was submitted, so each change of an edit stayed in memory for good."""
    from gradio.components.image_editor import EditorData

    png = (files / "digit.png").read_bytes()
    for editor in _editors(app):
        for draft in range(demo_app.MAX_PENDING_EDITS + 50):
            _send_draft(editor, str(draft), png)
        assert len(editor.blob_storage) == demo_app.MAX_PENDING_EDITS
        newest = str(demo_app.MAX_PENDING_EDITS + 49)
        assert editor.preprocess(EditorData(id=newest))["composite"].size == (30, 40)
        with pytest.raises(demo_app.DemoError, match="this edit is no longer on the server .* change the image again"):
            editor.preprocess(EditorData(id="0"))


def test_a_bomb_sent_as_a_browser_draft_is_refused_from_its_header(app, files, decoded_sizes):
    from gradio.components.image_editor import EditorData

    editor = _editors(app)[0]
    _send_draft(editor, "bomb", (files / "bomb.png").read_bytes())
    with pytest.raises(demo_app.DemoError, match=r"the composite is too large \(12000x12000"):
        editor.preprocess(EditorData(id="bomb"))
    assert (BOMB_SIDE, BOMB_SIDE) not in decoded_sizes


# ---------------------------------------------------------------------------------------------------- point 9
def _pixels(demo, image: Image.Image) -> torch.Tensor:
    return demo.processor(to_model_mode(image, "L"), return_tensors="pt")["pixel_values"]


def test_uploads_are_flattened_as_in_training(demo, tmp_path):
    """RGBA: transparent pixels become black whatever colour they hide; 16-bit: scaled to 8 bits, not clipped white."""
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red hidden under alpha 0: dropping alpha (as training did) would make it gray 76
    rgba[:8, :, :] = 255  # the top half: opaque white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    pixels, _ = demo.prepare(str(tmp_path / "rgba.png"))
    assert torch.equal(pixels, _pixels(demo, Image.open(tmp_path / "rgba.png")))
    assert (pixels[0, 0, :8] == 1).all() and (pixels[0, 0, 8:] == -1).all()

    Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)).save(tmp_path / "sixteen.png")  # mid-gray, 16 bits
    with Image.open(tmp_path / "sixteen.png") as sixteen:
        assert sixteen.mode.startswith("I")
        expected = _pixels(demo, sixteen)
    pixels, _ = demo.prepare(str(tmp_path / "sixteen.png"))
    assert torch.equal(pixels, expected)
    assert torch.allclose(pixels, torch.full_like(pixels, 128 / 255 * 2 - 1), atol=1e-6)  # before: 1.0 (white)


def test_an_empty_drawing_canvas_is_black(demo):
    canvas = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    canvas.paste((255, 255, 255, 255), (0, 0, 16, 4))  # one white stroke across the top
    pixels, _ = demo.prepare({"background": None, "layers": [canvas], "composite": canvas})
    assert (pixels[0, 0, :4] == 1).all() and (pixels[0, 0, 4:] == -1).all()


# ---------------------------------------------------------------------------------------------------- memory
def _memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and its peak since the last reset (VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


@pytest.fixture(scope="module")
def server_process(files, tmp_path_factory):
    """The demo as a visitor meets it: `python spaces_demo/app.py` in its own process, on 127.0.0.1."""
    folder, port = tmp_path_factory.mktemp("server"), _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "GRADIO_TEMP_DIR": str(folder / "gradio")}  # fmt: skip
    command = [sys.executable, str(APP), "--model", str(files / "vqvae"), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=folder)  # fmt: skip
    lines: Queue = Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        output = []
        while not any("Running on local URL" in line for line in output):
            try:
                output.append(lines.get(timeout=120))
            except Empty:
                pytest.fail("the demo did not start within 120 s:\n" + "".join(output))
        yield process, f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _baseline_mb(process, client: Client, files: Path) -> float:
    """RSS once both upload tabs have answered (first-request allocations belong to the baseline); resets the peak."""
    _upload(client, "/reconstruct", files / "digit.png", files)
    _upload(client, "/interpolate", files / "digit.png", files)
    _reset_peak(process.pid)
    return _memory_mb(process.pid)["VmRSS"]


def _upload_repeatedly(url: str, client: Client, path: Path, files: Path, sequential: int, concurrent: int) -> list:
    """`sequential` uploads one after the other, then `concurrent` at once from their own clients, alternating the
    Reconstruct and Interpolate tabs: each one's result, or its error message."""

    def upload(index: int, own_client: Client):
        try:
            return _upload(own_client, ["/reconstruct", "/interpolate"][index % 2], path, files)
        except AppError as error:
            return str(error)

    results = [upload(index, client) for index in range(sequential)]
    clients = [Client(url, verbose=False) for _ in range(concurrent)]
    with ThreadPoolExecutor(concurrent) as pool:
        return results + list(pool.map(upload, range(concurrent), clients))


def _report(record_property, name: str, baseline: float, memory: dict[str, float]) -> None:
    record_property(f"{name}_rss_baseline_mb", round(baseline))
    record_property(f"{name}_rss_after_mb", round(memory["VmRSS"]))
    record_property(f"{name}_rss_peak_mb", round(memory["VmHWM"]))
    print(f"\n{name}: demo RSS baseline {baseline:.0f} MB, after {memory['VmRSS']:.0f} MB, peak {memory['VmHWM']:.0f} MB")


LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads the server's memory in /proc")


@pytest.mark.slow
@LINUX_PROC
def test_memory_stays_flat_across_repeated_and_concurrent_bomb_uploads(server_process, files, record_property):
    """Before: each 12000x12000 upload was decoded and its memory kept: 0.6 -> 1.8 -> 2.9 -> 4.0 GB (here: 0.57 GB
    -> 4.4 GB after these 9 uploads)."""
    process, url = server_process
    client = Client(url, verbose=False)
    baseline = _baseline_mb(process, client, files)
    messages = _upload_repeatedly(url, client, files / "bomb.png", files, sequential=5, concurrent=4)
    memory = _memory_mb(process.pid)
    _report(record_property, "bombs", baseline, memory)
    assert len(messages) == 9 and all("bomb.png is too large (12000x12000" in message for message in messages), messages
    # Decoding the bomb even once costs 144 MB at PIL's 1 byte per pixel (576 MB as the RGBA Gradio's editor converts it
    # to), so a peak under 100 MB above the baseline shows that no upload was decoded, even for a moment.
    assert memory["VmHWM"] - baseline < 100
    assert memory["VmRSS"] - baseline < 100


@pytest.mark.slow
@LINUX_PROC
def test_memory_is_returned_after_the_largest_allowed_uploads(server_process, files, record_property):
    """Images of MAX_PIXELS are decoded (~320 MB at the peak of one request); once answered, that memory must go back.
    Before (glibc's growing mmap threshold kept it in the worker threads' arenas): +110 MB after 6 sequential uploads,
    +430 MB after 8 more concurrent ones, still growing."""
    largest = write_blank_png(files / "largest.png", 4096, 4096)
    assert 4096 * 4096 == MAX_PIXELS
    process, url = server_process
    client = Client(url, verbose=False)
    baseline = _baseline_mb(process, client, files)
    results = _upload_repeatedly(url, client, largest, files, sequential=3, concurrent=4)
    memory = _memory_mb(process.pid)
    _report(record_property, "largest_allowed", baseline, memory)
    assert all(not isinstance(result, str) for result in results), results  # each one answered (no error message)
    assert memory["VmRSS"] - baseline < 100  # less than one request's peak, or two decoded RGBA copies (64 MB each)
