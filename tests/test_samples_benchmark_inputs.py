"""benchmarks/samples_cifar10.py stops before any work, with what to do, when a part would read what is absent."""

import pytest
from script_modules import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/samples_cifar10.py")


def _paths(bench, tmp_path, *present):
    args = bench.parse_args(["--output_dir", str(tmp_path)])
    paths = bench.paths_for(args)
    for name in present:
        paths[name].mkdir(parents=True)
    return paths


def test_a_part_alone_names_the_absent_input_and_the_part_that_makes_it(bench, tmp_path):
    paths = _paths(bench, tmp_path, "vqvae2", "vqvae", "prior_top", "prior_bottom", "prior_single")
    with pytest.raises(SystemExit, match=r"part samples reads .*judge, which is absent: run the part 'judge' first"):
        bench.check_inputs(["samples"], paths)
    bench.check_inputs(["judge", "samples"], paths)  # an earlier part of the same run makes it: no complaint


def test_every_input_of_a_part_is_checked_in_run_order(bench, tmp_path):
    paths = _paths(bench, tmp_path)
    with pytest.raises(SystemExit, match=r"part codes reads .*vqvae2, which is absent: run the part 'vq' first"):
        bench.check_inputs(["codes", "priors"], paths)
    bench.check_inputs(["vq", "codes", "priors", "judge", "samples"], paths)  # the whole run makes everything
    with pytest.raises(SystemExit, match=r"part priors reads .*codes-vqvae2.*run the part 'codes' first"):
        bench.check_inputs(["vq", "priors", "codes"], paths)  # made by a later part: too late


def test_a_given_model_folder_that_is_absent_is_refused(bench, tmp_path):
    args = bench.parse_args(["--output_dir", str(tmp_path / "out"), "--vqvae2", str(tmp_path / "nowhere"),
                             "--parts", "codes"])  # fmt: skip
    with pytest.raises(SystemExit, match=r"--vqvae2 .*nowhere is absent: give the folder of a trained model"):
        bench.main(args)
    assert not (tmp_path / "out").exists()  # refused before anything was made
