"""Every artifact loads without the package: in a fresh process where hf_vqvae cannot be imported,
`trust_remote_code=True` loads the model (AutoModel), its image processor (AutoImageProcessor), the sampling pipeline
(DiffusionPipeline) and its priors (AutoModel), and each gives exactly the package's outputs."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vqvae import (
    PixelCNNPriorConfig,
    PixelCNNPriorModel,
    VQImageProcessor,
    VQVAE2Config,
    VQVAE2Model,
    VQVAE2Pipeline,
)
from hf_vqvae.hub import assemble_repo_folder, remote_code_files

SEED, LABELS = 0, [1, 7]
VQ_CODE = {"configuration_vqvae.py", "modeling_vqvae.py", "blocks.py", "quantizer.py"}
PRIOR_CODE = {"configuration_pixelcnn_prior.py", "modeling_pixelcnn_prior.py", "layers.py", "sampling.py"}
PIPELINE_CODE = {"vqvae2_pipeline.py", "codes_source.py", "standalone_code.py"}

BLOCK_PACKAGE = """
sys.modules["hf_vqvae"] = None  # make the package unimportable in this process
try:
    import hf_vqvae
    raise SystemExit("hf_vqvae should not be importable here")
except ImportError:
    blocked = True
"""

# What both scripts below start with: the package blocked, the loaders imported, the folder of inputs.
PREAMBLE = """
import json, sys
{block}
from pathlib import Path
import numpy as np, torch
from PIL import Image
from diffusers import DiffusionPipeline
from transformers import AutoImageProcessor, AutoModel

torch.set_num_threads(1)
root = Path(sys.argv[1])
"""

# Loads everything from the folders' own code and writes each output as .npy under <root>/remote.
REMOTE = PREAMBLE + """out = root / "remote"
out.mkdir()
inputs = {{path.stem: np.load(path) for path in (root / "inputs").glob("*.npy")}}
labels = torch.tensor({labels})
codes = [torch.from_numpy(inputs["codes_0"]), torch.from_numpy(inputs["codes_1"])]
classes = {{}}


def prior_logits(prior, level):
    condition = codes[level - 1] if level else None
    return prior(codes[level], class_labels=labels, condition_codes=condition).logits.numpy()


with torch.no_grad():
    model = AutoModel.from_pretrained(root / "vqvae2", trust_remote_code=True).eval()
    np.save(out / "reconstruction.npy", model(torch.from_numpy(inputs["pixels"])).reconstruction.numpy())
    processor = AutoImageProcessor.from_pretrained(root / "vqvae2", trust_remote_code=True)
    np.save(out / "pixel_values.npy", processor(Image.open(root / "inputs" / "image.png")).pixel_values.numpy())
    pipe = DiffusionPipeline.from_pretrained(root / "pipeline", trust_remote_code=True)
    sample = dict(class_labels=labels.tolist(), output_type="np")
    np.save(out / "images.npy", pipe(2, generator=torch.Generator().manual_seed({seed}), **sample).images)
    for level in (0, 1):
        prior = AutoModel.from_pretrained(root / "pipeline" / f"prior_level_{{level}}", trust_remote_code=True).eval()
        np.save(out / f"logits_{{level}}.npy", prior_logits(prior, level))
        np.save(out / f"pipeline_logits_{{level}}.npy", prior_logits(getattr(pipe, f"prior_level_{{level}}"), level))
    classes = {{"model": type(model), "processor": type(processor), "pipeline": type(pipe), "vqvae": type(pipe.vqvae),
               "prior_level_0": type(pipe.prior_level_0), "prior": type(prior)}}
    # a pipeline loaded from its code saves a folder that loads the same way
    pipe.save_pretrained(out / "resaved")
    again = DiffusionPipeline.from_pretrained(out / "resaved", trust_remote_code=True)
    np.save(out / "images_resaved.npy", again(2, generator=torch.Generator().manual_seed({seed}), **sample).images)

loaded = sorted(name for name, module in sys.modules.items() if name.startswith("hf_vqvae") and module is not None)
print(json.dumps({{"blocked": blocked, "hf_vqvae_modules": loaded,
                  "classes": {{name: f"{{cls.__module__}}.{{cls.__name__}}" for name, cls in classes.items()}}}}))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny untrained models saved as a user publishes them: a VQ-VAE-2 with its image processor, and a two-level
    class-conditional pipeline with its two PixelCNN priors; plus fixed inputs as .npy and PNG."""
    root = tmp_path_factory.mktemp("remote_code")
    torch.manual_seed(0)
    vq2 = VQVAE2Model(VQVAE2Config(num_channels=1, image_size=16, hidden_channels=16, residual_channels=8,
                                   num_residual_blocks=1, level_downsamples=[1, 1], num_embeddings=16, embedding_dim=4))  # fmt: skip
    shapes = vq2.config.latent_shapes()
    top = PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=16, hidden_channels=8, num_layers=2, num_classes=10,
                                                 code_shape=list(shapes[0])))  # fmt: skip
    bottom = PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=16, hidden_channels=8, num_layers=2, num_classes=10,
                                                    code_shape=list(shapes[1]), condition_num_embeddings=16,
                                                    condition_hidden_channels=8, condition_num_residual_blocks=1))  # fmt: skip
    vq2.save_pretrained(root / "vqvae2")
    VQImageProcessor.from_model_config(vq2.config).save_pretrained(root / "vqvae2")
    VQVAE2Pipeline(vqvae=vq2, prior_level_0=top, prior_level_1=bottom).save_pretrained(root / "pipeline")

    rng = np.random.default_rng(0)
    (root / "inputs").mkdir()
    np.save(root / "inputs" / "pixels.npy", (rng.random((2, 1, 16, 16)) * 2 - 1).astype(np.float32))
    for level, shape in enumerate(shapes):
        np.save(root / "inputs" / f"codes_{level}.npy", rng.integers(0, 16, (2, *shape)))
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "inputs" / "image.png")
    return root


def _package_outputs(root) -> dict[str, np.ndarray]:
    """The same outputs as REMOTE, from the installed package's classes."""
    inputs = {path.stem: np.load(path) for path in (root / "inputs").glob("*.npy")}
    labels = torch.tensor(LABELS)
    codes = [torch.from_numpy(inputs["codes_0"]), torch.from_numpy(inputs["codes_1"])]
    outputs = {}
    with torch.no_grad():
        model = VQVAE2Model.from_pretrained(root / "vqvae2").eval()
        outputs["reconstruction"] = model(torch.from_numpy(inputs["pixels"])).reconstruction.numpy()
        processor = VQImageProcessor.from_pretrained(root / "vqvae2")
        outputs["pixel_values"] = processor(Image.open(root / "inputs" / "image.png")).pixel_values.numpy()
        pipe = VQVAE2Pipeline.from_pretrained(root / "pipeline")
        assert type(pipe.vqvae) is VQVAE2Model and type(pipe.prior_level_1) is PixelCNNPriorModel  # no folder code ran
        generator = torch.Generator().manual_seed(SEED)
        outputs["images"] = pipe(2, class_labels=LABELS, generator=generator, output_type="np").images
        for level in (0, 1):
            prior = PixelCNNPriorModel.from_pretrained(root / "pipeline" / f"prior_level_{level}").eval()
            condition = codes[level - 1] if level else None
            logits = prior(codes[level], class_labels=labels, condition_codes=condition).logits
            outputs[f"logits_{level}"] = logits.numpy()
    return outputs


def test_a_saved_pipeline_carries_its_code_in_diffusers_layout(saved):
    pipeline = saved / "pipeline"
    root_files = {path.name for path in pipeline.iterdir() if path.is_file()}
    assert root_files == {"model_index.json", *PIPELINE_CODE}
    index = json.loads((pipeline / "model_index.json").read_text())
    assert index["_class_name"] == ["vqvae2_pipeline", "VQVAE2Pipeline"]
    # each component loads from its code in one file (what diffusers downloads of it from a Hub repo)
    assert index["vqvae"] == ["modeling_vqvae_standalone", "VQVAE2Model"]
    standalone = ["modeling_pixelcnn_prior_standalone", "PixelCNNPriorModel"]
    assert index["prior_level_0"] == index["prior_level_1"] == standalone
    assert index["prior_level_2"] == [None, None]
    assert VQ_CODE | {"modeling_vqvae_standalone.py"} <= {path.name for path in (pipeline / "vqvae").iterdir()}
    for level in (0, 1):
        files = {path.name for path in (pipeline / f"prior_level_{level}").iterdir()}
        assert PRIOR_CODE | {"modeling_pixelcnn_prior_standalone.py"} <= files
    # hub.remote_code_files (what push_to_hub stages) finds the pipeline's code at the root
    assert {path.name for path in remote_code_files(pipeline)} == PIPELINE_CODE
    # the processor is saved with its code and an auto_map
    processor_config = json.loads((saved / "vqvae2" / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoImageProcessor": "image_processing.VQImageProcessor"}
    assert (saved / "vqvae2" / "image_processing.py").is_file()


def test_everything_loads_with_remote_code_and_no_package_and_matches_the_package(saved):
    script = REMOTE.format(block=BLOCK_PACKAGE, labels=LABELS, seed=SEED)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(saved / "modules"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script, str(saved)], env=env, capture_output=True, text=True,
                            cwd=saved, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    # 1. the subprocess really ran without hf_vqvae: the import failed and no hf_vqvae module was ever loaded
    assert report["blocked"] is True and report["hf_vqvae_modules"] == []
    classes = report["classes"]
    loaded_alone = {"model": "VQVAE2Model", "processor": "VQImageProcessor", "prior": "PixelCNNPriorModel"}
    for name, class_name in loaded_alone.items():
        assert classes[name].startswith("transformers_modules.") and classes[name].endswith(f".{class_name}")
    assert classes["pipeline"] == "diffusers_modules.local.vqvae2_pipeline.VQVAE2Pipeline"
    assert classes["vqvae"] == "diffusers_modules.local.modeling_vqvae_standalone.VQVAE2Model"
    assert classes["prior_level_0"] == "diffusers_modules.local.modeling_pixelcnn_prior_standalone.PixelCNNPriorModel"

    # 2. identical outputs: reconstruction, processor pixels, pipeline samples, prior logits (alone and in the pipeline)
    expected = _package_outputs(saved)
    remote = saved / "remote"
    for name in ("reconstruction", "pixel_values", "images", "logits_0", "logits_1"):
        got = np.load(remote / f"{name}.npy")
        assert got.shape == expected[name].shape and np.array_equal(got, expected[name]), name
    for level in (0, 1):
        assert np.array_equal(np.load(remote / f"pipeline_logits_{level}.npy"), expected[f"logits_{level}"])
    assert np.array_equal(np.load(remote / "images_resaved.npy"), expected["images"])
    resaved = json.loads((remote / "resaved" / "model_index.json").read_text())
    assert resaved["_class_name"] == ["vqvae2_pipeline", "VQVAE2Pipeline"]
    assert resaved["vqvae"] == ["modeling_vqvae_standalone", "VQVAE2Model"]  # one file already: kept as it is


def test_a_pipeline_saved_without_its_code_still_loads_with_the_package_but_is_not_published(saved, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(saved / "pipeline", old)
    (old / "vqvae2_pipeline.py").unlink()
    (old / "codes_source.py").unlink()
    index = json.loads((old / "model_index.json").read_text())
    index.update(_class_name="VQVAE2Pipeline", vqvae=["hf_vqvae.models.vqvae.modeling_vqvae", "VQVAE2Model"],
                 **{f"prior_level_{level}": ["hf_vqvae.models.pixelcnn_prior.modeling_pixelcnn_prior",
                                             "PixelCNNPriorModel"] for level in (0, 1)})  # fmt: skip
    (old / "model_index.json").write_text(json.dumps(index))
    pipe = VQVAE2Pipeline.from_pretrained(old)
    images = pipe(2, class_labels=LABELS, generator=torch.Generator().manual_seed(SEED), output_type="np").images
    assert np.array_equal(images, _package_outputs(saved)["images"])
    with pytest.raises(ValueError, match="saved without the pipeline's code"):
        assemble_repo_folder(old, tmp_path / "staging", "org/old")
    pipe.save_pretrained(tmp_path / "resaved")  # saving again gives the layout that publishes
    assert json.loads((tmp_path / "resaved" / "model_index.json").read_text())["_class_name"][0] == "vqvae2_pipeline"
    with pytest.raises(ValueError, match="push_to_hub=True\\) is not supported"):
        pipe.save_pretrained(tmp_path / "pushed", push_to_hub=True)


# Loads the published repos *by repo id* from a stand-in Hub (HF_ENDPOINT), without the package.
FROM_HUB = PREAMBLE + """out = root / "from_hub"
out.mkdir()
pixels = torch.from_numpy(np.load(root / "inputs" / "pixels.npy"))
with torch.no_grad():
    model = AutoModel.from_pretrained("org/vqvae2", trust_remote_code=True).eval()
    np.save(out / "reconstruction.npy", model(pixels).reconstruction.numpy())
    processor = AutoImageProcessor.from_pretrained("org/vqvae2", trust_remote_code=True)
    np.save(out / "pixel_values.npy", processor(Image.open(root / "inputs" / "image.png")).pixel_values.numpy())
    pipe = DiffusionPipeline.from_pretrained("org/pipeline", trust_remote_code=True)
    generator = torch.Generator().manual_seed({seed})
    np.save(out / "images.npy", pipe(2, class_labels={labels}, generator=generator, output_type="np").images)
loaded = sorted(name for name, module in sys.modules.items() if name.startswith("hf_vqvae") and module is not None)
print(json.dumps({{"blocked": blocked, "hf_vqvae_modules": loaded, "vqvae": type(pipe.vqvae).__module__,
                  "prior_level_1": type(pipe.prior_level_1).__module__}}))
"""


def test_published_repos_load_by_repo_id_from_the_hub_without_the_package(saved, tmp_path):
    """As a Hub user loads them: the repos push_to_hub stages, served by a stand-in Hub, loaded by id in a fresh
    process without hf_vqvae. From a repo id diffusers downloads only the module model_index.json names of each
    component's code, so the pipeline's components load from their code in one file."""
    from local_hub import LocalHub

    for name in ("vqvae2", "pipeline"):
        assemble_repo_folder(saved / name, tmp_path / "hub" / "org" / name, f"org/{name}")
    script = FROM_HUB.format(block=BLOCK_PACKAGE, labels=LABELS, seed=SEED)
    with LocalHub(tmp_path / "hub") as hub:
        env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "home"),
               "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
        result = subprocess.run([sys.executable, "-c", script, str(saved)], env=env, capture_output=True, text=True,
                                cwd=tmp_path, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["blocked"] is True and report["hf_vqvae_modules"] == []
    assert report["vqvae"].endswith(".modeling_vqvae_standalone")
    assert report["prior_level_1"].endswith(".modeling_pixelcnn_prior_standalone")

    # everything came from the stand-in Hub: the pipeline's code, and of each component its weights, config and
    # standalone module, not the multi-file code beside it (which the model repo's AutoModel loading fetched)
    # (the two priors' standalone modules are identical: whichever loads second finds the blob in the cache and is
    # only asked for, HEAD without GET, in an order that varies between runs)
    pipeline_files, pipeline_requests = hub.downloaded("org/pipeline"), hub.requested("org/pipeline")
    assert {"model_index.json", *PIPELINE_CODE} <= pipeline_files
    components = [("vqvae", "modeling_vqvae")] + [(f"prior_level_{i}", "modeling_pixelcnn_prior") for i in (0, 1)]
    for name, module in components:
        assert {f"{name}/model.safetensors", f"{name}/config.json"} <= pipeline_files
        assert f"{name}/{module}_standalone.py" in pipeline_requests
        assert f"{name}/{module}.py" not in pipeline_requests
    assert any(path.endswith("/modeling_pixelcnn_prior_standalone.py") for path in pipeline_files)  # one of the two
    assert VQ_CODE <= hub.downloaded("org/vqvae2")

    expected = _package_outputs(saved)
    for name in ("reconstruction", "pixel_values", "images"):
        got = np.load(saved / "from_hub" / f"{name}.npy")
        assert got.shape == expected[name].shape and np.array_equal(got, expected[name]), name


def test_publishing_refuses_a_component_module_that_imports_others_with_a_dot(saved, tmp_path):
    """A pipeline saved before components were joined into one module names the multi-file modeling module: from
    a repo id diffusers would download it without its imports, so the folder is not published."""
    old = tmp_path / "old"
    shutil.copytree(saved / "pipeline", old)
    index = json.loads((old / "model_index.json").read_text())
    (old / "model_index.json").write_text(json.dumps({**index, "vqvae": ["modeling_vqvae", "VQVAE2Model"]}))
    with pytest.raises(ValueError, match=r"loads the component 'vqvae' from modeling_vqvae.py, which imports .* with a dot"):
        assemble_repo_folder(old, tmp_path / "staging", "org/old")
    (old / "model_index.json").write_text(json.dumps({**index, "vqvae": ["modeling_gone", "VQVAE2Model"]}))
    with pytest.raises(ValueError, match="loads the component 'vqvae' from modeling_gone.py, which is missing"):
        assemble_repo_folder(old, tmp_path / "staging2", "org/old")
