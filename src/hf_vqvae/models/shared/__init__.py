"""The one source of the helpers every model folder needs (value checks, presets, strict loading, the priors' input
checks). A saved model folder must load with `trust_remote_code=True` where hf_vqvae is not installed, and remote
code carries only the files of the model's own folder, so each folder holds a generated copy of these modules
(`config_helpers.py`, `modeling_helpers.py`): edit them here, then run `python scripts/generate_model_helpers.py`;
`tests/test_generated_helpers.py` fails when a copy differs from its source."""
