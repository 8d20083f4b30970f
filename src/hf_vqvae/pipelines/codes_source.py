"""Which VQ model a prior's codes came from, and the check that a prior is paired with that model.

`scripts/extract_codes.py` records in `codes_info.json` a fingerprint of the VQ model's codebooks (sha256 of every
level's codebook, top first); prior training copies it, with the model's name, into the prior's config as
`codes_source = {"model": ..., "codebook_sha256": {...}}`; `VQVAE2Pipeline` (and so `scripts/sample.py`, a saved
pipeline and the demo) compares it with the decoder's codebooks. A name alone cannot decide: the same model is
loaded from many paths (a run folder, a pipeline's `vqvae/`, a Hub id), and two runs can share a path. The codebook
decides what a code means, so it is what is compared: the same model passes wherever it is loaded from, also after
its decoder alone was fine-tuned; another model, or the same run trained on, fails.

The fingerprint is recorded for the dtypes a model is commonly loaded in (float32, float16, bfloat16), each the
codebook cast to that dtype, so a pipeline loaded with `torch_dtype=torch.float16` still matches.
"""

from __future__ import annotations

import hashlib

import torch

FINGERPRINT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def codebook_fingerprints(vq_model) -> dict[str, str]:
    """sha256 (hex) of the model's codebooks, all levels top first, cast to each of `FINGERPRINT_DTYPES`."""
    return {name: _codebook_digest(vq_model, dtype) for name, dtype in FINGERPRINT_DTYPES.items()}


def codebook_matches(vq_model, fingerprints: dict[str, str]) -> bool | None:
    """Whether the model's codebooks are those `fingerprints` were taken of; None when that cannot be told (the
    codebook is not materialised, or no fingerprint was recorded for its dtype)."""
    codebook = vq_model.quantizers[0].codebook
    if codebook.is_meta:
        return None
    name = next((name for name, dtype in FINGERPRINT_DTYPES.items() if dtype == codebook.dtype), "float32")
    if name not in fingerprints:
        return None
    return _codebook_digest(vq_model, FINGERPRINT_DTYPES[name]) == fingerprints[name]


def _codebook_digest(vq_model, dtype: torch.dtype) -> str:
    digest = hashlib.sha256()
    for quantizer in vq_model.quantizers:
        codebook = quantizer.codebook.detach().to("cpu", dtype).contiguous()
        digest.update(codebook.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_codes_source(vqvae, priors: list) -> None:
    """Refuse a prior whose recorded codes source is not `vqvae` (priors that record none are not checked)."""
    for level, prior in enumerate(priors):
        source = getattr(prior.config, "codes_source", None) or {}
        fingerprints = source.get("codebook_sha256")
        if fingerprints and codebook_matches(vqvae, fingerprints) is False:
            raise ValueError(_mismatch_message(level, prior, source.get("model") or "an unnamed model", vqvae))


def _mismatch_message(level: int, prior, codes_model: str, vqvae) -> str:
    decoder = vqvae.name_or_path or "an unsaved model"
    prior_name = prior.name_or_path or "an unsaved prior"
    if decoder == codes_model:
        reason = f"{decoder!r} now holds another codebook (it was retrained or overwritten since the codes were made)"
    else:
        reason = f"the VQ model given is {decoder!r}, whose codebook is not the one those codes index"
    return (
        f"prior_level_{level} ({prior_name}) was trained on codes of the VQ model {codes_model!r}, but {reason}; "
        f"its samples would decode to noise. Pair the prior with the VQ model its codes came from, or extract codes "
        f"with this one (scripts/extract_codes.py --model {decoder}) and train a prior on them."
    )


__all__ = ["FINGERPRINT_DTYPES", "check_codes_source", "codebook_fingerprints", "codebook_matches"]
