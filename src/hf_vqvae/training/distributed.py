"""Sharded training (FSDP) of the priors through Accelerate, on GPUs and on CPU-only machines.

    accelerate launch --use_fsdp --fsdp_version 2 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP \\
        --fsdp_state_dict_type SHARDED_STATE_DICT --num_processes 8 scripts/train.py --model transformer-prior ...

Each process holds 1/N of every parameter, gradient and optimizer state (FSDP2, `torch.distributed.fsdp.fully_shard`);
the forward and backward passes gather one FSDP unit's shards just before they use it (with TRANSFORMER_BASED_WRAP, a
unit per GPT2Block of the transformer prior). The PixelCNN prior trains as a single unit (no --fsdp_auto_wrap_policy):
its forward calls each gated layer's `condition()` outside the layer's `forward`, where a per-layer unit has not
gathered the layer's weights. Checkpoints are sharded (`save_state` / `load_state`), the end-of-run evaluation runs
on the sharded model on every process, and the finished model is gathered once, on the main process's CPU, into an
ordinary model that `save_pretrained` writes like any other run's (`gather_full_model`).

CPU-only machines. Accelerate 1.15 turns FSDP on only for GPU-like process groups (`AcceleratorState` keeps a
gloo group `MULTI_CPU`), so `ACCELERATE_USE_CPU=1 accelerate launch --use_fsdp ...` would otherwise train silently
replicated, with DDP. torch's FSDP2 itself runs on CPU over gloo, so `make_accelerator` switches Accelerate's state to
FSDP there and Accelerate's own FSDP2 code (prepare, clip_grad_norm_, get_state_dict, save_state, load_state) runs as
it does on GPUs. FSDP1 cannot run on CPU (Accelerate's plugin needs a GPU for `sync_module_states`, and torch's
`FullyShardedDataParallel` refuses the CPU device Accelerate hands it), so there FSDP1 is refused with that reason.

Only the priors shard: a VQ model's codebook is written in place inside its forward (k-means initialisation, dead-code
restarts), and FSDP2 drops writes into the gathered copy of a parameter when it re-shards.
"""

from __future__ import annotations

import copy
import os

import torch
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, parse_flag_from_env

from ..registry import families_of_kind, family_for
from .logs import get_logger

logger = get_logger(__name__)



def fsdp_requested() -> bool:
    """`accelerate launch --use_fsdp` (or an accelerate config with `distributed_type: FSDP`) was used."""
    return parse_flag_from_env("ACCELERATE_USE_FSDP", default=False)


def _cpu_only() -> bool:
    return parse_flag_from_env("ACCELERATE_USE_CPU", default=False) or not torch.accelerator.is_available()


def make_accelerator(**kwargs) -> Accelerator:
    """`Accelerator(**kwargs)`; under `--use_fsdp` on a CPU-only machine, with FSDP2 switched on over gloo."""
    if not (fsdp_requested() and _cpu_only()):
        return Accelerator(**kwargs)
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ValueError(
            f"FSDP on CPU runs only as FSDP2: pass --fsdp_version 2 to accelerate launch (got FSDP_VERSION={version}). "
            f"FSDP1 needs a GPU: accelerate's plugin gets the device for sync_module_states from CUDA/XPU/..., and "
            f"torch's FullyShardedDataParallel refuses the CPU device ('Inconsistent compute device')"
        )
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables that accelerate launch set
    accelerator = Accelerator(fsdp_plugin=plugin, **kwargs)
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        _switch_to_fsdp(accelerator, plugin)
    return accelerator


def _switch_to_fsdp(accelerator: Accelerator, plugin: FullyShardedDataParallelPlugin) -> None:
    """What `AcceleratorState.__init__` does for FSDP on a GPU process group, done for a gloo (CPU) one."""
    state = accelerator.state
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    if accelerator.is_main_process:
        logger.info("FSDP2 on CPU over gloo across %d processes (accelerate enables FSDP on GPUs only; switched on "
                    "here so that the model is sharded, not replicated)", accelerator.num_processes)  # fmt: skip


def is_sharded(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.FSDP


def prepare_for_sharding(accelerator: Accelerator, model) -> None:
    """Under FSDP: refuse a model FSDP would train wrongly, and answer what Accelerate's FSDP2 preparation asks."""
    if not is_sharded(accelerator):
        return
    if not family_for(model).is_prior:
        raise ValueError(
            f"FSDP (accelerate launch --use_fsdp) trains the priors ({', '.join(f.cli_name for f in families_of_kind('prior'))}), not a "
            f"{model.config.model_type} model: a VQ codebook is written in place during the forward pass (k-means "
            f"init, dead-code restarts), which a sharded model would lose. Launch without --use_fsdp (DDP)"
        )
    _answer_embedding_queries(model)


def _answer_embedding_queries(model) -> None:
    """Accelerate gives the input embeddings and the output head their own FSDP units, asking the model for them with
    `get_input_embeddings()` / `get_output_embeddings()`; a `PreTrainedModel` that does not define them raises
    NotImplementedError. For such a model the answer comes from the transformers model inside it (the transformer
    prior's `GPT2LMHeadModel`), else None (no separate unit: the weights stay in the root unit, still sharded)."""
    inner = getattr(model, "transformer", None)
    for name in ("get_input_embeddings", "get_output_embeddings"):
        try:
            getattr(model, name)()
        except NotImplementedError:
            answer = getattr(inner, name, None) if isinstance(inner, torch.nn.Module) else None
            setattr(model, name, answer if answer is not None else (lambda: None))


def _plain_class(model) -> type:
    """The model's own class: FSDP2 swaps in a subclass `FSDP<Name>` of (FSDPModule, <Name>)."""
    from torch.distributed.fsdp import FSDPModule

    return next(cls for cls in type(model).__mro__ if not issubclass(cls, FSDPModule))


def gather_full_model(accelerator: Accelerator, model):
    """The whole trained model as an ordinary (unsharded) model on the main process's CPU; None on the others.

    Every process must call it: the shards are gathered collectively. The model is built on the meta device and takes
    the gathered tensors themselves (`assign=True`), so the main process holds one full copy of the weights, not two.
    """
    state_dict = accelerator.get_state_dict(model)  # full on the main process (CPU), empty elsewhere
    if not accelerator.is_main_process:
        return None
    sharded = accelerator.unwrap_model(model)
    with torch.device("meta"):
        plain = _plain_class(sharded)(copy.deepcopy(sharded.config))
    plain.load_state_dict(state_dict, strict=True, assign=True)
    buffers = dict(sharded.named_buffers())  # FSDP shards parameters only; buffers are whole on every process
    for name, buffer in list(plain.named_buffers()):
        if buffer.is_meta:  # a non-persistent buffer: not in any state dict
            owner, _, leaf = name.rpartition(".")
            plain.get_submodule(owner).register_buffer(leaf, buffers[name].detach().cpu().clone(), persistent=False)
    if hasattr(plain, "tie_weights"):
        plain.tie_weights()
    left = [name for name, tensor in [*plain.named_parameters(), *plain.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"gathering the sharded model left {left} unset")
    plain.train(sharded.training)
    return plain


def local_shards(model) -> dict[str, torch.Tensor]:
    """This process's own part of every parameter and buffer (for --debug_rank_outputs): under FSDP2 a parameter is a
    DTensor sharded on dim 0, whose local tensor holds rows [r * ceil(n / N), ...) of it."""
    from torch.distributed.tensor import DTensor

    tensors = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        tensors[name] = local.detach().cpu().contiguous()
    return tensors
