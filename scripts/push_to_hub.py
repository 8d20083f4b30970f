#!/usr/bin/env python
"""Publish a training run (or a saved VQVAE2Pipeline) to the Hugging Face Hub.

    python scripts/push_to_hub.py outputs/vqvae-digits --repo_id org/vqvae-digits --dry_run
    python scripts/push_to_hub.py outputs/vqvae-digits --repo_id org/vqvae-digits --private
    python scripts/push_to_hub.py outputs/mnist-pipeline --repo_id org/mnist-pipeline --create_pr

Steps: assemble the repo folder (safetensors weights, config, image processor, remote-code files, the card
re-rendered from metrics.json with the repo id, the image grid; for a pipeline model_index.json and component
folders), validate it by loading it in a fresh process and running one batch, then `HfApi.create_repo` +
`upload_folder`. `--dry_run` does everything but the upload and prints the file list with sizes.

Only the staging folder is uploaded, and it holds only those files: the remote-code files are the modules named in
config.json's `auto_map` plus the files they import with `from .module import ...` (found by parsing, never by
importing), so other `*.py` files of the run folder (notes, scripts, anything holding a token) are never
published. A pipeline's model_index.json must name its components by plain folder names (no `/`, `\\`, `..`,
leading dot); any other name is refused before anything is read or written.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from hf_vqvae.hub import assemble_repo_folder, upload_repo_folder, validate_repo_folder

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a training run's output_dir, or a VQVAE2Pipeline.save_pretrained folder")
    parser.add_argument("--repo_id", required=True, help="namespace/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument("--create_pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--token", default=None, help="a Hub token (default: the logged-in one)")
    parser.add_argument("--staging_dir", default=None, help="assemble here (default: a temporary folder)")
    parser.add_argument("--skip_validation", action="store_true", help="do not load the folder in a fresh process")
    parser.add_argument("--dry_run", action="store_true", help="assemble and validate, print the files, upload nothing")
    args = parser.parse_args(argv)
    if not REPO_ID.match(args.repo_id):
        parser.error(f"--repo_id must look like namespace/name, got {args.repo_id!r}")
    return args


def format_file_list(files) -> str:
    width = max(len(file.path) for file in files)
    lines = [f"{file.path:<{width}}  {_human_size(file.size):>9}" for file in files]
    total = sum(file.size for file in files)
    return "\n".join([*lines, f"{len(files)} files, {_human_size(total)}"])


def _human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def main(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="hf_vqvae-push-") as temporary:
        staging = Path(args.staging_dir or Path(temporary) / "repo")
        try:
            files = assemble_repo_folder(args.run_dir, staging, args.repo_id)
        except ValueError as error:
            raise SystemExit(f"push_to_hub: {error}") from None
        print(f"repo folder for {args.repo_id} ({staging}):\n{format_file_list(files)}")
        validation = None
        if not args.skip_validation:
            validation = validate_repo_folder(staging)
            print(f"validated: loads in a fresh process and runs one batch -> {validation}")
        if args.dry_run:
            print("dry run: nothing uploaded")
            return {"files": files, "validation": validation, "uploaded": None}
        commit = upload_repo_folder(staging, args.repo_id, private=args.private, revision=args.revision,
                                    create_pr=args.create_pr, commit_message=args.commit_message, token=args.token)  # fmt: skip
        print(f"uploaded to https://huggingface.co/{args.repo_id}: {commit}")
        return {"files": files, "validation": validation, "uploaded": commit}


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
