"""`--device` of scripts/sample.py, scripts/train_classifier.py and the demo; hf_vqvae.devices.

On a CPU-only machine: `--device cpu` runs, and a device that is not there (`--device cuda`) is a usage error that
names the devices available, not a stack trace from inside torch.
"""

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import sample as sample_script  # noqa: E402
import train_classifier  # noqa: E402
from test_packaging import save_tiny_vqvae2_and_pipeline  # noqa: E402

from hf_vqvae.devices import available_devices, default_device, resolve_device  # noqa: E402

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a GPU that is not there")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    save_tiny_vqvae2_and_pipeline(root)
    return root


def test_resolve_device_defaults_to_cuda_when_there_else_cpu():
    assert default_device() == resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu") and "cpu" in available_devices()
    with pytest.raises(ValueError, match="not a torch device name.*use one of: cpu"):
        resolve_device("gpu0")


@cpu_only
def test_an_absent_gpu_is_refused_with_the_devices_that_are_there():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"device '{name}' is not available on this machine; use one of: cpu"):
            resolve_device(name)


def test_sample_script_runs_on_the_device_given(saved, tmp_path):
    common = ["--pipeline", str(saved / "pipeline"), "--num_images", "2", "--class_labels", "3"]
    sample_script.main(sample_script.parse_args([*common, "--device", "cpu", "--output", str(tmp_path / "cpu.png")]))
    sample_script.main(sample_script.parse_args([*common, "--output", str(tmp_path / "default.png")]))
    assert Image.open(tmp_path / "cpu.png").size == (2 * 16 + 3 * 2, 16 + 2 * 2)
    if not torch.cuda.is_available():  # the default is the CPU, so the same samples
        assert Image.open(tmp_path / "cpu.png").tobytes() == Image.open(tmp_path / "default.png").tobytes()


@cpu_only
@pytest.mark.parametrize("script", [sample_script, train_classifier])
def test_scripts_refuse_an_absent_gpu_with_a_usage_error(script, tmp_path, capsys):
    required = ["--pipeline", "p"] if script is sample_script else ["--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit) as raised:
        script.parse_args([*required, "--device", "cuda"])
    assert raised.value.code == 2  # argparse's usage error
    error = capsys.readouterr().err
    assert "argument --device: device 'cuda' is not available on this machine; use one of: cpu" in error
    assert "Traceback" not in error


def test_train_classifier_trains_and_saves_on_the_device_given(tmp_path):
    args = train_classifier.parse_args(["--image_size", "8", "--max_train_steps", "2", "--batch_size", "16",
                                        "--max_eval_samples", "32", "--device", "cpu",
                                        "--output_dir", str(tmp_path / "classifier")])  # fmt: skip
    assert args.device == torch.device("cpu")
    metrics = train_classifier.main(args)
    assert metrics["train_steps"] == 2 and (tmp_path / "classifier" / "model.safetensors").is_file()


def test_demo_loads_on_the_device_given_and_refuses_an_absent_one(saved, capsys):
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e .[demo]")
    sys.path.insert(0, str(ROOT / "spaces_demo"))
    import app as demo_app

    demo = demo_app.load_demo(str(saved / "vqvae2"), str(saved / "pipeline"), device="cpu")
    assert demo.model.device.type == demo.pipeline.device.type == "cpu"
    gallery, message = demo.sample(3, 1.0, 0, 1.0, 0, 2)
    assert len(gallery) == 2 and "class 3" in message
    assert demo_app.parse_args(["--device", "cpu"]).device == torch.device("cpu")
    if torch.cuda.is_available():
        return
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        demo_app.load_demo(str(saved / "vqvae2"), device="cuda")
    with pytest.raises(SystemExit):
        demo_app.parse_args(["--device", "cuda"])
    assert "argument --device: device 'cuda' is not available" in capsys.readouterr().err
