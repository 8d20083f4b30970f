"""The training loop that scripts/train.py runs: Accelerate, resumable, on any dataset the data module reads."""

from __future__ import annotations

import json
import platform
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, is_compiled_module, set_seed
from datasets import Dataset
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..data import BatchStats, DataArguments, batches_for_rank
from ..evaluation import codebook_health, to_jsonable
from .arguments import ModelArguments, TrainArguments
from .artifacts import write_metrics, write_model_card
from .builders import build_model, build_optimizer, build_scheduler, run_output_dir
from .checkpointing import TrainingState, find_checkpoint, load_checkpoint, read_training_state, save_checkpoint
from .distributed import gather_full_model, is_sharded, local_shards, make_accelerator, prepare_for_sharding
from .interrupts import StopSignals, TrainingInterrupted
from .logs import get_logger
from .output_dir import check_output_dir, remove_checkpoints, write_atomically
from .tasks import ImageTask, make_task

logger = get_logger(__name__)


def log_image_to_trackers(accelerator, name: str, image, step: int) -> None:
    """Send a PIL image to the trackers that show images (tensorboard, wandb), as diffusers' training scripts do."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: np.asarray(image.convert("RGB"))[None]}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({name: [image]}, step=step)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; nothing is saved from that step on."""


class EmptyEpochError(RuntimeError):
    """A pass over the training data gave no full batch: training could never make a step."""


def train(model_args: ModelArguments, data_args: DataArguments, args: TrainArguments, overrides: dict) -> dict:
    """Train, then write the model folder, grids and metrics.json to `args.output_dir`; returns the metrics."""
    output_dir = run_output_dir(model_args, args)
    accelerator = _make_accelerator(args, output_dir)
    _prepare_output_dir(accelerator, output_dir, args)
    set_seed(args.seed)
    model = build_model(model_args, overrides, data_args.resolution)
    if args.binarize != "none" and getattr(model.config, "decoder_distribution", None) != "bernoulli":
        raise ValueError(f"--binarize {args.binarize} applies to a VAE with a Bernoulli decoder, not this model")
    if args.channels_last:  # 4-D (conv) weights only; the images follow in `ImageTask.model_input`
        model = model.to(memory_format=torch.channels_last)
        accelerator.register_save_state_pre_hook(_contiguous_weights)
    prepare_for_sharding(accelerator, model)
    task = make_task(model, model_args, data_args, args)
    total_steps = _total_steps(args, task.train_dataset, accelerator.num_processes)
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args, total_steps, accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = TrainingState()
    if args.resume_from_checkpoint:
        state = _resume(accelerator, output_dir, args.resume_from_checkpoint, total_steps)
        logger.info("resumed at step %d (epoch %d, batch %d)", state.global_step, state.epoch, state.batches_in_epoch)
    run = _Run(accelerator, model, optimizer, scheduler, args, state, total_steps, output_dir, task)
    run.base_model = model_args.init_from
    if model_args.reset_dead_codes and not args.resume_from_checkpoint:  # a resumed run has done it already
        _reset_dead_codes(run)
    accelerator.init_trackers("hf_vqvae", config=_tracker_config(model_args, data_args, args))
    start = time.time()
    run.fit()
    return _finish(run, time.time() - start)


def _prepare_output_dir(accelerator, output_dir: Path, args: TrainArguments) -> None:
    resuming = bool(args.resume_from_checkpoint)
    discarded = check_output_dir(output_dir, resuming=resuming, overwrite=args.overwrite_output_dir)
    if discarded:
        accelerator.wait_for_everyone()  # every process has looked before the main one deletes
        if accelerator.is_main_process:
            logger.warning("--overwrite_output_dir: deleting %d checkpoint(s) of an earlier run in %s", len(discarded),
                           output_dir)  # fmt: skip
            remove_checkpoints(output_dir)
        accelerator.wait_for_everyone()


def _resume(accelerator, output_dir: Path, which: str, total_steps: int) -> TrainingState:
    path = find_checkpoint(output_dir, which)
    step = read_training_state(path).global_step
    if step > total_steps:
        raise ValueError(
            f"{path} is at step {step}, past this run's {total_steps} steps (--max_train_steps / epochs): pass a "
            f"larger --max_train_steps to continue it, or start afresh with --overwrite_output_dir"
        )
    return load_checkpoint(accelerator, path)


def _make_accelerator(args: TrainArguments, output_dir: Path) -> Accelerator:
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs"))
    return make_accelerator(  # Accelerator(...), with FSDP on CPU too (see distributed.py)
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=project,
    )


def _total_steps(args: TrainArguments, train, num_processes: int) -> int:
    if isinstance(train, Dataset) and train.num_rows // num_processes < args.train_batch_size:
        raise EmptyEpochError(
            f"{train.num_rows} training images give no full batch of {args.train_batch_size} per process "
            f"({num_processes} process(es)), so no step could ever be taken; lower --train_batch_size"
        )
    if args.max_train_steps is not None:
        return args.max_train_steps
    if not isinstance(train, Dataset):
        raise ValueError("a streamed dataset has no length: pass --max_train_steps")
    per_process = train.num_rows // num_processes // args.train_batch_size
    steps = per_process // args.gradient_accumulation_steps * args.num_train_epochs
    if steps < 1:
        raise ValueError(
            f"{train.num_rows} training images give no full step of batch {args.train_batch_size} x "
            f"{num_processes} process(es) x {args.gradient_accumulation_steps} accumulation; lower --train_batch_size"
        )
    return steps


class _Run:
    """The state of one training run and its step logic (kept apart from building things)."""

    def __init__(self, accelerator, model, optimizer, scheduler, args, state, total_steps, output_dir, task):
        self.accelerator, self.model, self.optimizer, self.scheduler = accelerator, model, optimizer, scheduler
        self.args, self.state, self.total_steps, self.output_dir = args, state, total_steps, output_dir
        self.task = task
        # --torch_compile compiles only the training step's calls: checkpoints, evaluation and saving see the prepared
        # module itself (same state-dict keys as an eager run). `accelerate launch --dynamo_backend` compiles in
        # `prepare` instead; either way the codebooks are k-means-initialised eagerly before the first step.
        compile_here = args.torch_compile and not is_compiled_module(model)
        self.step_model = torch.compile(model) if compile_here else model
        self.codebooks_pending = args.torch_compile or is_compiled_module(model)
        self.base_model: str | None = None  # the --init_from model of a fine-tune, for the card
        self.stats = BatchStats()
        self.usage_window = None  # (num_levels, K) code counts since the last log
        self.loss_window: list[float] = []
        self.seen_ids: list[str] = []
        self.seen_losses: list[float] = []  # --debug_rank_outputs: this process's loss of every micro-batch
        self.warned_levels: set[int] = set()  # levels whose low codebook usage was reported (once each)
        self.images_since_log, self.time_of_log = 0, time.time()

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)  # the model class, for saving

    def fit(self) -> None:
        """Train to `total_steps`; Ctrl-C / SIGTERM save a checkpoint and raise `TrainingInterrupted`."""
        bar = tqdm(total=self.total_steps, initial=self.state.global_step, desc="steps",
                   disable=not self.accelerator.is_local_main_process)  # fmt: skip
        self.model.train()
        with StopSignals() as signals:
            while self.state.global_step < self.total_steps:
                self._run_epoch(bar, signals)
        bar.close()

    def _run_epoch(self, bar, signals: StopSignals) -> None:
        """The rest of the current epoch, or up to the last step; an epoch with no batch at all is an error."""
        start_batch, decoded, skipped = self.state.batches_in_epoch, self.stats.decoded, self.stats.skipped
        for batch in self._epoch_batches():
            if self._micro_step(batch):
                bar.update(1)
                self._after_step(bar)
                self._stop_if_signalled(signals)
                if self.state.global_step >= self.total_steps:
                    return
        if self.state.batches_in_epoch == 0 and start_batch == 0:
            raise EmptyEpochError(self._empty_epoch_message(self.stats.decoded - decoded, self.stats.skipped - skipped))
        self.state.epoch, self.state.batches_in_epoch, self.state.position = self.state.epoch + 1, 0, 0

    def _empty_epoch_message(self, decoded: int, skipped: int) -> str:
        examples = f" (first: {'; '.join(self.stats.skipped_examples)})" if skipped else ""
        return (
            f"a whole pass over the training data gave process {self.accelerator.process_index} no batch of "
            f"{self.args.train_batch_size} images: {decoded} decoded, {skipped} skipped as undecodable{examples}. "
            f"Lower --train_batch_size, check --image_column and the images, or add data"
        )

    def _stop_if_signalled(self, signals: StopSignals) -> None:
        """After a step: if any process got SIGINT/SIGTERM, all save a checkpoint and stop together."""
        received = torch.tensor([signals.received or 0], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            received = self.accelerator.gather(received).max().reshape(1)
        number = int(received.item())
        if number == 0:
            return
        path = save_checkpoint(self.accelerator, self.output_dir, self.state, self.args.checkpoints_total_limit)
        raise TrainingInterrupted(
            f"stopped by {signal_name(number)} at step {self.state.global_step} of {self.total_steps}; checkpoint "
            f"saved to {path}. Resume with the same command plus --resume_from_checkpoint latest", number
        )

    def _epoch_batches(self):
        # From the recorded data position when there is one (nothing before it is decoded), else by batch count.
        return self.task.batches(self.state.epoch, self.state.batches_in_epoch, self.accelerator.process_index,
                                 self.accelerator.num_processes, self.stats, self.args.debug_rank_outputs,
                                 start_position=self.state.position, device=self.accelerator.device)  # fmt: skip

    def _micro_step(self, batch: dict) -> bool:
        """One micro-batch; returns True when it completed an optimizer step."""
        position = batch.pop("data_position", None)  # where the next micro-batch begins in this process's shard
        if self.args.debug_rank_outputs:
            self.seen_ids.extend(batch.get("example_ids", ()))  # code batches carry no ids
        with self.accelerator.accumulate(self.model):
            output = self._forward(batch)
            if self._loss_is_finite(output.loss):
                self.accelerator.backward(output.loss)
                if self.accelerator.sync_gradients and self.args.max_grad_norm > 0:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.state.batches_in_epoch, self.state.position = self.state.batches_in_epoch + 1, position
        self._record(output, len(next(iter(batch.values()))))
        if self.accelerator.sync_gradients:
            self.state.global_step += 1
            return True
        return False

    def _forward(self, batch: dict):
        if self.codebooks_pending:
            self._initialize_codebooks(batch)
        return self.task.forward(self.step_model, self.unwrapped.config, batch, self.accelerator.device)

    def _initialize_codebooks(self, batch: dict) -> None:
        """Before the first compiled step: the k-means initialisation that an eager forward does on its first batch
        (a compiled one only checks it was done; see VQPreTrainedModel.initialize_codebooks). Every process calls it."""
        self.codebooks_pending = False
        initialize = getattr(self.unwrapped, "initialize_codebooks", None)
        if initialize is not None:
            with self.accelerator.autocast():
                levels = initialize(self.task.model_input(batch, self.accelerator.device))
            if levels:
                logger.info("k-means-initialised the codebook of level(s) %s before the first compiled step", levels)

    def _loss_is_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        if self.accelerator.num_processes > 1:
            finite = self.accelerator.gather(finite).min().reshape(1)  # every process takes the same decision
        if bool(finite.item()):
            return True
        step = self.state.global_step + 1
        if self.args.skip_nonfinite:
            logger.warning("non-finite loss at step %d: step skipped (--skip_nonfinite)", step)
            return False
        raise NonFiniteLossError(
            f"the loss is {loss.item()} at step {step}; stopping without saving. Lower --learning_rate, check the "
            f"data for broken images, or pass --skip_nonfinite to skip such steps"
        )

    def _record(self, output, batch_size: int) -> None:
        self.loss_window.append(float(output.loss.detach()))
        if self.args.debug_rank_outputs:
            self.seen_losses.append(self.loss_window[-1])
        self.images_since_log += batch_size
        usage = getattr(output, "usage", None)
        if usage is not None:
            usage = usage.detach().cpu()
            self.usage_window = usage if self.usage_window is None else self.usage_window + usage

    def _after_step(self, bar) -> None:
        step = self.state.global_step
        if step % self.args.logging_steps == 0 or step == self.total_steps:
            self._log(bar)
        if self.args.checkpointing_steps and step % self.args.checkpointing_steps == 0:
            save_checkpoint(self.accelerator, self.output_dir, self.state, self.args.checkpoints_total_limit)
        if self.args.image_logging_steps and step % self.args.image_logging_steps == 0:
            self._write_image_grid()

    def _write_image_grid(self) -> None:
        """Held-out inputs above their reconstructions, as images/step-<N>.png and to the trackers (main process)."""
        grid = self.task.grid(self.unwrapped) if self.accelerator.is_main_process else None
        if grid is not None:
            folder = self.output_dir / "images"
            folder.mkdir(parents=True, exist_ok=True)
            grid.save(folder / f"step-{self.state.global_step}.png")
            log_image_to_trackers(self.accelerator, "reconstructions", grid, self.state.global_step)

    def _log(self, bar) -> None:
        elapsed = max(time.time() - self.time_of_log, 1e-9)
        logs = {
            "loss": sum(self.loss_window) / max(len(self.loss_window), 1),
            "lr": self.scheduler.get_last_lr()[0],
            "images_per_s": self.images_since_log * self.accelerator.num_processes / elapsed,
            "skipped_images": self.stats.skipped,
        }
        postfix = dict(loss=f"{logs['loss']:.4f}", img_s=f"{logs['images_per_s']:.0f}")
        if self.usage_window is not None:  # per level: fraction of codes used in the window, dead codes, perplexity
            logs.update(codebook_health(self.usage_window))
            usage = [logs[f"codebook_usage_level_{level}"] for level in range(self.usage_window.shape[0])]
            postfix["codes_used"] = "/".join(f"{100 * fraction:.0f}%" for fraction in usage)  # top level first
            self._warn_on_low_usage(usage)
        bar.set_postfix(**postfix)
        self.accelerator.log(to_jsonable(logs), step=self.state.global_step)
        self.loss_window, self.usage_window = [], None
        self.images_since_log, self.time_of_log = 0, time.time()


    def _warn_on_low_usage(self, usage: list[float]) -> None:
        threshold = self.args.codebook_usage_warning
        for level, fraction in enumerate(usage):
            if fraction < threshold and level not in self.warned_levels and self.accelerator.is_main_process:
                self.warned_levels.add(level)
                logger.warning(
                    "codebook collapse: level %d (0 = top) used only %.1f%% of its codes over the last %d steps (step "
                    "%d; warning below %.0f%%). Keep k-means initialisation and dead-code restarts on (the defaults, "
                    "not --paper_codebook), lower --learning_rate, or for a fine-tune pass --reset_dead_codes", level, 100 * fraction, self.args.logging_steps, self.state.global_step,
                    100 * threshold)  # fmt: skip


def _reset_dead_codes(run: _Run, num_batches: int = 4) -> None:
    """Fine-tuning: codes that the new data never picks (over a few batches) restart from its encoder outputs."""
    model = run.unwrapped
    quantizers = getattr(model, "quantizers", None)
    if quantizers is None or not isinstance(run.task, ImageTask):
        raise ValueError("--reset_dead_codes applies to VQ-VAE / VQ-VAE-2 models, which have codebooks")
    splits, transform = run.task.splits, run.task.transform
    batches = batches_for_rank(splits.train, splits.image_column, transform, batch_size=run.args.train_batch_size,
                               seed=run.args.seed, epoch=0, shuffle=False, drop_last=False)  # fmt: skip
    model.eval()
    used = [torch.zeros(q.num_embeddings, dtype=torch.bool, device=run.accelerator.device) for q in quantizers]
    encoder_outputs = {}  # level -> the quantizer's input z_e of the last batch
    hooks = [q.register_forward_pre_hook(lambda module, inputs, level=level: encoder_outputs.__setitem__(level, inputs[0]))
             for level, q in enumerate(quantizers)]  # fmt: skip
    with torch.no_grad():
        for _, batch in zip(range(num_batches), batches):
            encoded = model.encode(batch["pixel_values"].to(run.accelerator.device))
            for level, codes in enumerate(encoded.codes):
                used[level] |= torch.bincount(codes.flatten(), minlength=quantizers[level].num_embeddings) > 0
        for level, (quantizer, level_used) in enumerate(zip(quantizers, used)):
            dead = (~level_used).nonzero().squeeze(1)
            if dead.numel():
                quantizer.reseed_codes(dead, encoder_outputs[level].movedim(1, -1).reshape(-1, quantizer.embedding_dim))
            logger.info("level %d: re-seeded %d of %d codes unused by the new data", level, dead.numel(),
                        quantizer.num_embeddings)  # fmt: skip
    for hook in hooks:
        hook.remove()
    model.train()


def _finish(run: _Run, wall_time: float) -> dict:
    accelerator, model = run.accelerator, run.unwrapped
    accelerator.wait_for_everyone()
    if run.args.debug_rank_outputs:
        _write_rank_outputs(run, model)
    metrics = {}
    if is_sharded(accelerator):  # FSDP: every process takes part in the evaluation's forwards and in the gathering
        metrics = run.task.evaluate(run.model)
        model = gather_full_model(accelerator, run.model)  # the whole model on the main process's CPU, else None
    elif accelerator.is_main_process:
        metrics = run.task.evaluate(model)
    if accelerator.is_main_process:
        metrics.update(skipped_images=run.stats.skipped, train_steps=run.state.global_step)
        _write_outputs(run, model, metrics, wall_time)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics


def _write_rank_outputs(run: _Run, model) -> None:
    rank = run.accelerator.process_index
    run.output_dir.mkdir(parents=True, exist_ok=True)
    (run.output_dir / f"example_ids_rank{rank}.json").write_text(json.dumps(run.seen_ids))
    (run.output_dir / f"losses_rank{rank}.json").write_text(json.dumps(run.seen_losses))
    if is_sharded(run.accelerator):  # FSDP: this process's shard of each parameter
        state = local_shards(model)
    else:
        state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, run.output_dir / f"weights_rank{rank}.safetensors")


def _write_outputs(run: _Run, model, metrics: dict, wall_time: float) -> None:
    """The final model, artifacts, metrics and card, written atomically (see `write_atomically`)."""
    run.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run.output_dir, lambda folder: _write_final_files(run, model, metrics, wall_time, folder))
    logger.info("wrote %s", run.output_dir)


def _write_final_files(run: _Run, model, metrics: dict, wall_time: float, output_dir: Path) -> None:
    model.save_pretrained(output_dir)
    run.task.write_artifacts(model, output_dir)
    training = dict(
        dataset=run.task.source, steps=run.state.global_step, batch_size=run.args.train_batch_size,
        processes=run.accelerator.num_processes, wall_time_s=round(wall_time, 1),
        hardware=f"{run.accelerator.device.type} ({platform.processor() or platform.machine()})",
        learning_rate=run.args.learning_rate, weight_decay=run.args.adam_weight_decay,
        mixed_precision=run.accelerator.mixed_precision, base_model=run.base_model,
        eval_images=metrics.get("num_images") or metrics.get("eval_images"),
    )  # fmt: skip
    # metrics.json keeps the set-up too, so that scripts/push_to_hub.py can re-render the card from it.
    write_metrics(output_dir, {**metrics, "training": training})
    write_model_card(output_dir, model, metrics, training)


def _tracker_config(model_args, data_args, args) -> dict:
    flat = {**asdict(model_args), **asdict(data_args), **asdict(args)}
    return {key: value for key, value in flat.items() if isinstance(value, (int, float, str, bool))}


def signal_name(number: int) -> str:
    return signal.Signals(number).name


def _contiguous_weights(models, weights: list[dict], output_dir) -> None:
    """accelerate save_state pre-hook for --channels_last: safetensors stores only contiguous tensors, so the
    checkpoint holds the standard layout (load_state copies it back into the channels-last parameters)."""
    for state in weights:
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and not value.is_contiguous():
                state[key] = value.contiguous()


__all__ = ["EmptyEpochError", "NonFiniteLossError", "TrainingInterrupted", "train"]
