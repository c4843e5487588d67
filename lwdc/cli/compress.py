"""`lwdc compress` and `lwdc demo`: settings, the run folder (through lwdc.runs.Run) and resuming it.

The options of the compression itself are generated from :class:`lwdc.api.CompressConfig` (its defaults are the
CLI's); the rest (model, data, baseline training) describe the run. Everything that can fail on bad input (data,
model, weights, batch size) is checked before the run folder is created, so a failed start leaves nothing.
"""
from __future__ import annotations

import time
from dataclasses import MISSING, fields
from pathlib import Path

import click
import torch
from click.core import ParameterSource

from .. import distributed as dist
from ..budgets import BUDGET_SIGNALS
from ..api import LEGACY_DEFAULTS, CompressConfig, compress, compress_fingerprint
from ..landmarks.losses import LOSSES
from ..methods import list_methods
from ..ops import OP_SETS
from ..runs import CheckpointError, Run, RunError, write_json
from ..stages import check_checkpoint, config_fingerprint, train_stage
from ..tasks import list_tasks
from ..train import TrainConfig
from .base import fail, main
from ..summary import format_summary

#: CompressConfig fields offered as options, with their help; their defaults come from the dataclass.
CONFIG_HELP = {
    "method": f"Compression method ({', '.join(list_methods())}).",
    "search_epochs": "Epochs of the search (gates and weights together).",
    "finetune_epochs": "Epochs of fine-tuning the compressed model.",
    "lam": "Weight of the resource cost (larger: smaller model); default 1, or 0 with --target.",
    "original_prob": "Initial probability of keeping each original layer (0: all operators equally likely).",
    "noise_end": "Gumbel sampling noise at the end of the search, from 1 at its start; below 1 the late search "
                 "trains the network it will derive (1: constant noise, the behaviour before this setting existed).",
    "warmup_epochs": "Branch warm-up by local distillation before the search.",
    "ops": f"Operator set ({', '.join(OP_SETS)}) or comma-separated names.",
    "cost": "Search cost: params, macs (flops), latency[:onnxruntime][:bN], systolic[:RxC][:ws|os][:risa], "
            "flash[:int8|float32], ram[:int8|float32][:inplace|plain].",
    "lr": "Weight learning rate during the search.",
    "finetune_lr": "Learning rate of fine-tuning.",
    "distill": "Fine-tune with the original model as teacher: weight of the distillation term added to the task "
               "loss (classification only; 0: off; 1 is a usual start).",
    "distill_temperature": "Temperature that softens both models' logits in the distillation term.",
    "distill_search": "Also distil LWDC's search (weights and gates learn toward the original's outputs); needs "
                      "--distill.",
    "arch_lr": "Gate learning rate (Adam).",
    "optimizer": "Weights' optimiser (pre-training, search, fine-tuning): sgd (Nesterov momentum) or adamw (what "
                 "direct coordinate regression needs, e.g. --task landmarks, with --lr/--finetune-lr about 1e-3).",
    "gate_optimizer": "Gates' optimiser: shared-adam (one second moment for all gates, so a gate moves in "
                      "proportion to what it changes) or adam (per-logit, as before this setting existed).",
    "gate_travel": "Raise the gates' rate to at least this / search steps (at most 0.1), so a short search (a few "
                   "hundred steps) can move them; e.g. 10 logits (unset or 0: arch-lr only).",
    "fill_limits": "After the search, also fill an absolute budget (flash=75000, ram=64KiB) the derived network "
                   "undershoots by more than --budget-tolerance: layers go back to the costlier operators their gates "
                   "rank next while every budget still holds (ratio targets like 0.5x are always filled).",
    "budget_tolerance": "A ratio target (0.5x) counts as met within this share; with --fill-limits, also the band "
                        "under an absolute budget that filling aims for.",
    "budget_signal": "What a target's pull is sized by during the search: argmax (the network that would be "
                     "derived now, so the search itself meets the target) or expected (the cost averaged over the "
                     "gates, the first control law; the repair after the search then did most of the compressing).",
    "budget_ramp": "Each budget's limit falls linearly from the original's cost (1.0x) to its value over this share "
                   "of the search (0: the full target from the first step, which moved every gate at once). In a "
                   "short search (a few hundred steps) a ramp can bring the pull too late, once the gates' sampling "
                   "noise has annealed and the pull's gradient faded: use 0 or --gate-travel there.",
    "seed": "Random seed of everything (data order, augmentation, gates).",
    "max_batches": "Cap batches per epoch (quick looks; evaluation then uses a class-balanced sample).",
    "checkpoint_every": "Also checkpoint every N batches mid-epoch (0: after each epoch only).",
    "device": "Where training runs: auto (cuda if available), cpu, cuda or cuda:N; under torchrun each rank takes "
              "cuda:LOCAL_RANK. Profiling, export and checkpoints stay on the CPU.",
}
_TYPES = {"max_batches": click.IntRange(min=1), "checkpoint_every": click.IntRange(min=0), "lam": float,
          "original_prob": float, "gate_travel": float, "ops": str,
          "gate_optimizer": click.Choice(["adam", "shared-adam"]), "budget_signal": click.Choice(list(BUDGET_SIGNALS)),
          "budget_ramp": click.FloatRange(0.0, 1.0), "optimizer": click.Choice(["sgd", "adamw"])}

#: Settings that describe the run rather than the compression, with their defaults.
RUN_DEFAULTS = {"model_name": "resnet20", "width": 1.0, "data": "cifar10-subset", "cache_dir": None, "download": False,
                "weights": None, "pretrain_epochs": 0, "pretrain_lr": 0.1, "batch_size": 128, "task": "auto",
                "augment": "auto", "threads": None, "progress": True, "eval_sample": "stratified",
                "data_options": (), "metrics": "auto", "class_weights": "none", "loss": "auto", "task_options": (),
                "init_from": None, "freeze": "none"}
AUGMENTS = ("auto", "none", "crop-flip", "shift")
LOSS_CHOICES = ("auto", *LOSSES)


def _config_option(name: str):
    f = next(f for f in fields(CompressConfig) if f.name == name)
    default = f.default if f.default is not MISSING else None
    kind = _TYPES.get(name, type(default) if default is not None else str)
    extra = {"callback": lambda ctx, param, value: value or None} if name in ("original_prob", "gate_travel") else {}
    if kind is bool:
        return click.option(f"--{name.replace('_', '-')}", name, is_flag=True, default=default, help=CONFIG_HELP[name])
    return click.option(f"--{name.replace('_', '-')}", name, default=default, type=kind, show_default=True,
                        help=CONFIG_HELP[name], **extra)


_RUN_OPTIONS = [
    click.option("--model", "model_name", default=RUN_DEFAULTS["model_name"], show_default=True,
                 help="A registered model name, or your own factory as path/to/file.py:factory or "
                      "package.module:factory (that code is imported and run, like any Python import: name only code "
                      "you trust). The factory receives num_classes, in_channels and width if it takes them."),
    click.option("--width", default=RUN_DEFAULTS["width"], show_default=True, help="Width multiplier of the model."),
    click.option("--data", default=RUN_DEFAULTS["data"], show_default=True,
                 help="A registered data set (cifar10-subset is shipped; cifar10, cifar100...) or a folder / .tar.gz "
                      "of a known layout."),
    click.option("--data-option", "data_options", multiple=True, metavar="KEY=VALUE",
                 help="An option of the data's reader (repeatable), e.g. for P300 epochs fold=2, folds=4, subject=1, "
                      "split=loso; the error lists what a layout accepts."),
    click.option("--cache-dir", default=None, help="Where unpacked and decoded data sets are cached."),
    click.option("--download", is_flag=True, help="Download cifar10/cifar100 if they are not cached (needs network)."),
    click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="state_dict of a trained model to compress (else --pretrain-epochs trains one)."),
    click.option("--pretrain-epochs", default=RUN_DEFAULTS["pretrain_epochs"], show_default=True,
                 type=click.IntRange(min=0), help="Train the baseline first."),
    click.option("--pretrain-lr", default=RUN_DEFAULTS["pretrain_lr"], show_default=True,
                 help="Learning rate of baseline training."),
    click.option("--batch-size", default=RUN_DEFAULTS["batch_size"], show_default=True, type=click.IntRange(min=1)),
    click.option("--task", default=RUN_DEFAULTS["task"], show_default=True,
                 help=f"Task (loss and metrics): auto (the data set's) or one of {', '.join(list_tasks())}."),
    click.option("--metrics", default=RUN_DEFAULTS["metrics"], show_default=True,
                 type=click.Choice(["auto", "basic", "clinical"]),
                 help="Classification metrics: basic (loss, accuracy) or clinical (also ROC AUC, balanced accuracy, "
                      "sensitivity, specificity, precision, F1, Youden's J and threshold, confusion matrix); auto: "
                      "clinical for two classes."),
    click.option("--class-weights", default=RUN_DEFAULTS["class_weights"], show_default=True,
                 help="Cross-entropy class weights: none, balanced (inverse training frequency) or w0,w1,... (one "
                      "per class)."),
    click.option("--loss", default=RUN_DEFAULTS["loss"], show_default=True, type=click.Choice(LOSS_CHOICES),
                 help="Landmark loss (--task landmarks): l2, l1, smooth-l1, wing or rwing; auto: the task's default "
                      "(rwing). Parameters (w, eps, r, beta, in input pixels) with --task-option."),
    click.option("--task-option", "task_options", multiple=True, metavar="KEY=VALUE",
                 help="An option of the task (repeatable), e.g. for landmarks w=10, eps=2, r=0.5, pck_px=10."),
    click.option("--init-from", default=RUN_DEFAULTS["init_from"], type=click.Path(exists=True),
                 help="Start the model from another lwdc run folder (its trained original model) or a weights file "
                      "(read with weights_only): every tensor but the head's is loaded; a head of another size (e.g. "
                      "a CIFAR classifier's) is replaced to fit this task."),
    click.option("--freeze", default=RUN_DEFAULTS["freeze"], show_default=True,
                 type=click.Choice(["none", "backbone"]),
                 help="With --init-from and --pretrain-epochs: backbone trains only the head during the baseline "
                      "training (compression then trains every weight); none trains everything."),
    click.option("--augment", default=RUN_DEFAULTS["augment"], show_default=True, type=click.Choice(AUGMENTS),
                 help="Training augmentation: auto (the data set's default: crop+flip for images, a time shift for "
                      "spoken digits, flip/rotation/scale/shift/colour moving the points for landmarks, none for "
                      "other signals), none, crop-flip (2-D) or shift (1-D)."),
    click.option("--eval-sample", default=RUN_DEFAULTS["eval_sample"], show_default=True,
                 type=click.Choice(["stratified", "first"]),
                 help="With --max-batches: the before/after evaluation takes a seeded class-stratified sample of "
                      "the test split (stratified) or its first batches (first: the behaviour before this option)."),
    *[_config_option(name) for name in CONFIG_HELP],
    click.option("--target", "budgets", multiple=True, metavar="COST=LIMIT",
                 help="A target or budget the search keeps by itself (repeatable): macs=0.5x, params=0.3x, "
                      "flash=200KiB (int8 weights; flash:float32=... for float), ram=48KiB (peak activation bytes "
                      "of the C library's memory plan; ram:plain=... without in-place kernels), "
                      "latency:onnxruntime=0.6x, systolic=0.5x, mcu:cortex-m4=5M or instructions=5M (instructions "
                      "on the emulated core). "
                      "With targets, --lam defaults to 0. A board name (--target cortex-m4) instead means --export c "
                      "for that board."),
    click.option("--export", "export", default="none", show_default=True, type=click.Choice(["none", "c"]),
                 help="After fine-tuning, write RUN/firmware: the int8 C library calibrated on training data, "
                      "verified where it runs (--target cortex-m4: built for the core and run in QEMU), with "
                      "deploy.json: flash, RAM, instructions per inference (emulated cores), int8 accuracy on the "
                      "test split. A --target naming a board (cortex-m4, cortex-m7, cortex-m33) implies --export c."),
    click.option("--export-target", default="host", show_default=True,
                 help="The board --export builds for (also given as --target cortex-m4)."),
    click.option("--threads", default=None, type=click.IntRange(min=1), help="torch intra-op threads (default: torch's)."),
    click.option("--run-dir", default=None, type=click.Path(file_okay=False), help="Run folder (default runs/<time>)."),
    click.option("--progress/--no-progress", default=True, show_default=True),
]


def _run_options(fn):
    for option in reversed(_RUN_OPTIONS):
        fn = option(fn)
    return fn


def _config(settings: dict) -> CompressConfig:
    names = {f.name for f in fields(CompressConfig)}
    config = {k: v for k, v in settings.items() if k in names}
    config["budgets"] = list(config.get("budgets") or []) or None     # no --target: None, as the dataclass
    return CompressConfig(**config)


def _augment(choice: str, bundle):
    from ..data import random_crop_flip, random_shift

    dims = len(bundle.input_shape) - 1
    if choice == "auto":
        if hasattr(bundle, "augment"):
            return bundle.augment
        return random_crop_flip(4) if dims == 2 else None
    if choice == "none":
        return None
    if (choice == "crop-flip") != (dims == 2):
        fail(f"--augment {choice} does not fit {dims}-D samples of shape {tuple(bundle.input_shape)}")
    return random_crop_flip(4) if choice == "crop-flip" else random_shift(max(1, bundle.input_shape[-1] // 32))


def _prepare(settings: dict, log=click.echo):
    """Data, loaders, model (with --weights) and task, all checked; nothing is written here."""
    from ..models import create_model

    bundle, train, test, task, task_name, augment, world, per_rank = _prepare_data(settings)

    torch.manual_seed(settings["seed"])
    try:
        model = create_model(settings["model_name"], num_classes=_outputs(task, bundle),
                             in_channels=bundle.input_shape[0], width=settings["width"])
    except (ValueError, TypeError) as exc:
        fail(f"--model {settings['model_name']}: {exc}")
    if settings.get("weights"):
        try:
            model.load_state_dict(torch.load(settings["weights"], map_location="cpu", weights_only=True))
        except Exception as exc:
            fail(f"cannot load --weights {settings['weights']} into {settings['model_name']}: "
                 f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    if settings.get("init_from"):
        from ..transfer import TransferError, init_from
        try:
            moved = init_from(model, settings["init_from"])
        except TransferError as exc:
            fail(f"--init-from into {settings['model_name']}: {exc}")
        log(f"init from {settings['init_from']}: {len(moved['loaded'])} tensors loaded"
            + (f", head {moved['head']} replaced ({len(moved['replaced'])} tensors, new output size)"
               if moved["replaced"] else f", head {moved['head']} kept (same size)"))
    _check_model(model, bundle, settings["model_name"])
    log(f"data {bundle.name}: {len(bundle.train)} train / {len(bundle.test)} test"
        + (f", {bundle.num_classes} classes" if bundle.num_classes else "")
        + f"; model {settings['model_name']} (width {settings['width']}); task {task_name}; augmentation "
        + (getattr(augment, "__name__", "custom") if augment is not None else "none")
        + (f"; {world} processes, {per_rank} samples each per step" if world > 1 else ""))
    return bundle, train, test, model, task


def _prepare_data(settings: dict):
    """The data, loaders and task the settings name, checked (no model: ``lwdc share`` brings its own)."""
    from ..data import BatchLoader, load_data

    world = dist.world_size()
    try:
        bundle = load_data(settings["data"], cache_dir=settings.get("cache_dir"), download=settings.get("download", False),
                           options=_data_options(settings.get("data_options") or ()) or None)
    except (ValueError, OSError) as exc:
        fail(f"--data {settings['data']}: {exc}")
    per_rank = settings["batch_size"] // world
    if per_rank > len(bundle.train):
        fail(f"--batch-size {settings['batch_size']} is larger than the {len(bundle.train)} training samples of "
             f"{bundle.name}: lower it")
    task_name = settings["task"] if settings["task"] != "auto" else getattr(bundle, "task", "classification")
    task = _make_task(task_name, settings, bundle)
    augment = _augment(settings["augment"], bundle)
    train = BatchLoader(bundle.train, per_rank, shuffle=True, augment=augment,
                        seed=settings["seed"], rank=dist.rank(), world_size=world, drop_last=True)
    test = BatchLoader(bundle.test, 256)
    return bundle, train, test, task, task_name, augment, world, per_rank


def _data_options(pairs) -> dict:
    from ..data import DataLayoutError, parse_options
    try:
        return parse_options(pairs)
    except DataLayoutError as exc:
        fail(f"--data-option: {exc}")


def _task_options(settings: dict) -> dict:
    """``--task-option`` pairs and ``--loss`` as the task's keyword options."""
    from ..data import DataLayoutError, parse_options
    try:
        options = parse_options(settings.get("task_options") or ())
    except DataLayoutError as exc:
        fail(f"--task-option: {str(exc).replace('data option', 'task option').replace('fold=2', 'w=10')}")
    if settings.get("loss", "auto") != "auto":
        options["loss"] = settings["loss"]
    return options


def _make_task(task_name: str, settings: dict, bundle):
    """The task with its options: classification's from --metrics/--class-weights, others' from --loss and
    --task-option (a task with ``for_data`` also reads the data: landmarks take the input size and point names)."""
    from ..tasks import get_task

    options = _task_options(settings)
    try:
        if task_name == "classification":
            if options:
                fail("--loss and --task-option apply to other tasks (landmarks); classification takes --metrics and "
                     "--class-weights")
            return get_task(task_name, **_classification_options(settings, bundle))
        return get_task(task_name, bundle=bundle, **options)
    except (ValueError, TypeError) as exc:
        fail(f"--task {task_name}: {str(exc).splitlines()[0]}")


def _class_weights(text: str) -> str | list[float]:
    """none, balanced, or a list of positive numbers (checked against the classes once the data is read)."""
    text = str(text).strip()
    if text in ("none", "balanced"):
        return text
    try:
        weights = [float(v) for v in text.split(",")]
    except ValueError:
        fail(f"--class-weights {text!r}: give none, balanced or one positive number per class (w0,w1,...)")
    if any(not w > 0 for w in weights):
        fail(f"--class-weights {text!r}: every weight must be positive")
    return weights


def _classification_options(settings: dict, bundle) -> dict:
    """The metrics and class weights of a classification task (``--metrics``, ``--class-weights``)."""
    from ..tasks import balanced_class_weights

    metrics = settings.get("metrics", "auto")
    if metrics == "auto":
        metrics = "clinical" if bundle.num_classes == 2 else "basic"
    weights = _class_weights(settings.get("class_weights", "none"))
    if weights == "balanced":
        weights = balanced_class_weights(bundle.train.y, bundle.num_classes).tolist()
    elif weights == "none":
        weights = None
    elif len(weights) != bundle.num_classes:
        fail(f"--class-weights gives {len(weights)} weights for the {bundle.num_classes} classes of {bundle.name}; "
             "give one per class")
    return {"metrics": metrics, "class_weights": weights}


def _outputs(task, bundle) -> int:
    """Outputs the model needs: the task's say (``output_size``), else the classes, else one per target value."""
    if hasattr(task, "output_size"):
        return int(task.output_size(bundle))
    if bundle.num_classes:
        return bundle.num_classes
    y = bundle.train.y
    if not isinstance(y, torch.Tensor):
        fail(f"data {bundle.name} has structured targets ({', '.join(y)}); its task must say how many outputs the "
             "model needs (an output_size(bundle) method)")
    return max(1, int(torch.tensor(y.shape[1:]).prod()))


def _check_model(model: torch.nn.Module, bundle, name: str) -> None:
    """One forward pass on a sample: a clear error for outputs lwdc cannot train or compress."""
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes - {torch.float32}:
        fail(f"--model {name}: its parameters are {', '.join(sorted(map(str, dtypes)))}; lwdc trains float32 models "
             "(call model.float() in your factory)")
    x = bundle.train.normalize(bundle.train.x[:2])
    try:
        with torch.no_grad():
            model.eval()
            out = model(x)
    except Exception as exc:
        fail(f"--model {name} fails on a batch of shape {tuple(x.shape)} from the data: {type(exc).__name__}: "
             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    finally:
        model.train()
    if not isinstance(out, torch.Tensor):
        fail(f"--model {name} returns a {type(out).__name__}; lwdc needs a model whose forward returns one tensor "
             "(wrap it to return the output you train on)")


def _run(settings: dict, run: Run, prepared, log=click.echo) -> dict:
    """Everything ``compress`` and ``demo`` do once the run folder exists; resumable stage by stage."""
    bundle, train, test, model, task = prepared
    if settings.get("weights"):
        pass
    elif settings["pretrain_epochs"] > 0:
        cfg = TrainConfig(epochs=settings["pretrain_epochs"], lr=settings["pretrain_lr"], max_batches=settings["max_batches"],
                          optimizer=settings.get("optimizer", "sgd"),
                          checkpoint_every=settings.get("checkpoint_every", 0), progress=settings["progress"],
                          desc="pretrain", device=settings.get("device", "auto"))
        from ..transfer import freeze
        frozen = freeze(model, settings.get("freeze", "none"))
        if frozen:
            log(f"pretrain: {len(frozen)} backbone tensors frozen, the head trains (--freeze backbone)")
        train_stage("pretrain", model, task, train, test, cfg, run, _pretrain_fingerprint(settings, run), log=log)
        freeze(model, "none")           # the compression stages train every weight
    else:
        log("warning: no --weights and no --pretrain-epochs: compressing an untrained model")
    result = compress(model, train, test, task=task, config=_config(settings), run_dir=run, log=log,
                      summary=False, eval_sample=settings.get("eval_sample", "stratified"))  # _start prints it
    return result.report


#: Run settings added after run folders existed: left out of the baseline's fingerprint at these values, and
#: what a config.json that lacks them is read as.
RUN_LEGACY = {"task": "auto", "augment": "auto", "method": "lwdc", "budgets": (), "eval_sample": "first",
              "data_options": (), "metrics": "auto", "class_weights": "none", "export": "none",
              "export_target": "host", "loss": "auto", "task_options": (), "init_from": None, "freeze": "none",
              "optimizer": "sgd"}
#: Settings of what happens after training: no checkpoint depends on them.
AFTER_TRAINING = ("export", "export_target")


def _pretrain_fingerprint(settings: dict, run: Run | None = None) -> str:
    """Checkpoints hold CPU tensors, so the device is not part of the settings a checkpoint is tied to. Only the
    settings ``run``'s config.json names count: the lwdc that wrote it fingerprinted those and no others, so a
    setting added since (filled in at its legacy value on resume) stays out. Before config.json exists (a new
    run, or another rank ahead of rank 0) every setting counts: the new folder will name them all."""
    stored = set(run.spec) if run is not None and (run.folder / Run.CONFIG).is_file() else None
    return config_fingerprint({k: v for k, v in settings.items()
                               if k != "device" and k not in AFTER_TRAINING and (stored is None or k in stored)
                               and not (k in RUN_LEGACY and v == RUN_LEGACY[k])})


def _validate(settings: dict) -> None:
    """Refuse bad settings before anything is read or written."""
    from ..models import is_code_reference, list_models
    from ..ops import resolve_ops

    _class_weights(settings.get("class_weights", "none"))
    _data_options(settings.get("data_options") or ())
    _task_options(settings)
    if settings.get("init_from") and settings.get("weights"):
        fail("give --weights (this model's own trained weights) or --init-from (another task's, head replaced), "
             "not both")
    if settings.get("freeze", "none") != "none" and not (settings.get("init_from") and settings["pretrain_epochs"]):
        fail(f"--freeze {settings['freeze']} keeps --init-from's backbone while --pretrain-epochs trains the head: "
             "give both")
    try:
        _config(settings).validate()
        resolve_ops(settings["ops"])
    except (ValueError, TypeError) as exc:     # BudgetError is a ValueError
        fail(str(exc))
    name = settings["model_name"]
    if name not in list_models() and not is_code_reference(name):
        fail(f"unknown model {name!r}; registered models: {', '.join(list_models())}; or your own factory as "
             "path/to/file.py:factory")
    if settings["batch_size"] < 1 or settings["batch_size"] % dist.world_size():
        fail(f"--batch-size {settings['batch_size']} is the global batch: it must be a positive multiple of the "
             f"{dist.world_size()} process(es)")


def _resumed_settings(run: Run, defaults: dict, overrides: dict | None = None, typed_model: str | None = None) -> dict:
    """config.json of a run folder, checked option by option as if it had been typed (missing: the default),
    with ``overrides`` (settings no checkpoint depends on, such as --device) replacing the stored values."""
    try:
        raw = run.spec
    except RunError as exc:
        fail(str(exc))
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        fail(f"{run.folder / Run.CONFIG} has unknown settings {', '.join(unknown)}: written by another lwdc version?")
    params = {p.name: p for p in compress_cmd.params}
    settings = {**defaults, **{k: v for k, v in {**LEGACY_DEFAULTS, **RUN_LEGACY}.items()
                               if k not in raw and k in defaults}}
    for key, value in raw.items():
        try:
            param = params[key]
            if value is None:
                settings[key] = None
            elif param.multiple:
                settings[key] = tuple(param.type.convert(v, param, None) for v in value)
            else:
                settings[key] = param.type.convert(value, param, None)
        except click.BadParameter as exc:
            fail(f"{run.folder / Run.CONFIG}: setting {key!r}: {exc.message}")
    from ..models import is_code_reference
    if is_code_reference(settings["model_name"]) and typed_model != settings["model_name"]:
        fail(f"this run's model is built by code ({settings['model_name']}); lwdc does not import code named by a "
             f"file it reads: pass --model {settings['model_name']} with --resume to confirm you trust it")
    settings.update(overrides or {})
    _validate(settings)
    return settings


def _vet_checkpoints(run: Run, settings: dict) -> None:
    """Refuse a damaged, foreign or mismatched checkpoint before any work (data, profiling) starts."""
    config = _config(settings)
    fingerprints = {"pretrain": _pretrain_fingerprint(settings, run), "search": compress_fingerprint(config, "search"),
                    "finetune": compress_fingerprint(config)}
    for stage, fingerprint in fingerprints.items():
        if run.has_checkpoint(stage):
            try:
                check_checkpoint(run.checkpoint_path(stage), stage, fingerprint)
            except CheckpointError as exc:
                fail(str(exc))


def _stored_device(resume: str | None) -> str | None:
    """The --device a resumed folder was started with (None if unknown; a damaged config.json is reported later)."""
    try:
        return Run.open(resume).spec.get("device") if resume else None
    except RunError:
        return None


def _start(settings: dict, run_dir: str | None, resume: str | None, device: str | None = None,
           typed_model: str | None = None) -> None:
    """Set up (or reopen) the run folder and run; under torchrun every rank runs this, only rank 0 writes.
    ``device`` is a --device typed on the command line: it overrides a resumed folder's stored one."""
    try:       # the device picks the process group's backend (nccl on CUDA), so it is checked first
        distributed = dist.init_from_env(device=device or _stored_device(resume) or settings["device"])
    except ValueError as exc:
        fail(str(exc))
    echo = click.echo if dist.is_main() else (lambda *a, **k: None)
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    created = False
    try:
        if resume:
            run = Run.open(resume)
            if run.finished:
                echo(f"{run.folder} finished earlier; not running it again.\n")
                echo(format_summary(run.report()))
                return
            settings = _resumed_settings(run, settings, {"device": device} if device else None, typed_model)
            if dist.is_main():
                run.lock()
            _vet_checkpoints(run, settings)
            prepared = _prepare(settings, echo)
        else:
            folder = Path(run_dir or f"runs/{Path(settings['model_name'].split(':')[0]).stem}-"
                                     f"{time.strftime('%Y%m%d-%H%M%S')}")
            _validate(settings)
            if folder.exists() and not folder.is_dir():
                fail(f"--run-dir {folder} is a file, not a folder")
            prepared = _prepare(settings, echo)          # data, model and weights checked before the folder exists
            dist.barrier()                 # every rank has checked the folder before rank 0 writes into it
            run = Run.create(folder, settings, lock=dist.is_main()) if dist.is_main() else Run(folder)
            created = dist.is_main()
    except RunError as exc:
        fail(str(exc))
    echo(f"run folder: {run.folder}")
    try:
        report = _run(settings, run, prepared, log=echo)
    except (ValueError, RuntimeError, OSError) as exc:
        if created:
            run.discard()          # failed before any work was saved: leave no husk that refuses the next run
        fail(f"{type(exc).__name__}: {exc}")
    finally:
        run.release()
    if distributed:
        dist.shutdown()
    echo("\n" + format_summary(report))
    if settings.get("export", "none") != "none" and dist.is_main():
        _firmware(settings, run, prepared, echo)
    echo(f"\nreport: {run.folder / Run.REPORT}   model: {run.folder} (lwdc export/profile/report take the folder; "
         f"{run.folder / 'model.pt2'} loads with torch.export.load(path).module())")


def _firmware(settings: dict, run: Run, prepared, echo) -> None:
    """``--export c``: the compressed model as an int8 C library in RUN/firmware, verified on its board, with
    flash, RAM, instructions per inference and the int8 C's accuracy on the test split in deploy.json."""
    import dataclasses

    from ..export import export_c
    from ..export.c import CompilerError, ExportError, UnsupportedLayerError, evaluate_c, find_compiler
    from ..export.c.instructions import count_instructions
    from ..export.c.targets import get_target

    bundle, _train, _test, _model, task = prepared
    board = get_target(settings["export_target"])
    net = run.load_model("model")
    calib = torch.stack([bundle.train[i][0] for i in range(min(256, len(bundle.train)))])
    example = torch.stack([bundle.test[i][0] for i in range(min(4, len(bundle.test)))])
    folder = run.folder / "firmware"
    echo(f"\nfirmware: int8 C for {board.name} in {folder}")
    try:
        # coordinate regression reads small output differences: bias correction took the landmark models' int8 C
        # from up to 1.6 to at most 1.0 input pixels from float (docs/landmarks.md); classification keeps the plain
        # export its recorded figures were measured with
        export = export_c(net, example, folder, int8=True, calib=calib, target=board.name, overwrite=True,
                          bias_correction=task.name == "landmarks",
                          source={"kind": "run", "run": str(run.folder), "data": settings["data"],
                                  "task": task.name, "normalization": {"mean": list(bundle.test.mean),
                                                                       "std": list(bundle.test.std)}},
                          log=echo)
        summary = export.summary
        if board.semihosting and board.can_run():
            echo("  counting instructions per inference on the emulated core...")
            counts = count_instructions(export, example[0])
            summary["instructions_per_inference"] = counts["instructions"]
            summary["instructions"] = counts
        if find_compiler("host"):
            echo(f"  {task.primary} of the int8 C on the {len(bundle.test)} test samples (the host build of the same "
                 "C; the board's output equalled the integer reference bit for bit)...")
            xs = torch.stack([bundle.test[i][0] for i in range(len(bundle.test))])
            host = dataclasses.replace(export, summary={**summary, "target": "host"})
            summary[f"{task.primary}_int8_c"] = evaluate_c(host, xs, bundle.test.targets(torch.arange(len(xs))),
                                                           task)[task.primary]
    except (UnsupportedLayerError, ExportError, CompilerError, ValueError) as exc:
        echo(f"firmware: not written: {type(exc).__name__}: {exc}")
        return
    write_json(folder / "deploy.json", summary)
    linked = summary.get("linked") or {}
    echo(f"firmware: {folder} (deploy.json): flash {linked.get('flash_bytes', summary['flash_bytes']):,} B, RAM "
         f"{linked.get('ram_bytes', summary['peak_ram_bytes']):,} B"
         + (f", {summary['instructions_per_inference']:,} instructions per inference"
            if "instructions_per_inference" in summary else "")
         + (f", int8 C {task.primary} {summary[f'{task.primary}_int8_c']:.2f}" if f"{task.primary}_int8_c" in summary
            else ""))


def settings_defaults() -> dict:
    """Every setting of ``lwdc compress`` at its default, as the command itself resolves them (flags included)."""
    with compress_cmd.make_context("compress", [], resilient_parsing=False) as ctx:
        return {k: v for k, v in ctx.params.items() if k not in ("resume", "run_dir")}


@main.command("compress")
@_run_options
@click.option("--resume", type=click.Path(file_okay=False), default=None, help="Continue an interrupted run folder.")
def compress_cmd(resume, run_dir, **settings) -> None:
    """Compress a model (search, derive and fine-tune for LWDC); write a run folder with report.json."""
    from ..export.c.targets import targets
    boards = [b for b in settings["budgets"] if "=" not in b]
    for board in boards:
        if board not in targets():
            fail(f"--target {board!r}: give COST=LIMIT (macs=0.5x, ram=64KiB...) or a board: {', '.join(targets())}")
    if len(boards) > 1:
        fail(f"--target names {len(boards)} boards ({', '.join(boards)}); give one")
    if boards:
        settings.update(budgets=tuple(b for b in settings["budgets"] if "=" in b), export="c",
                        export_target=boards[0])
    if settings["export_target"] not in targets():
        fail(f"--export-target {settings['export_target']!r} is unknown; known: {', '.join(targets())}")
    source = click.get_current_context().get_parameter_source
    typed = lambda name: source(name) not in (ParameterSource.DEFAULT, None)  # noqa: E731
    _start(settings, run_dir, resume, settings["device"] if typed("device") else None,
           settings["model_name"] if typed("model_name") else None)


@main.command()
@click.option("--run-dir", default=None, type=click.Path(file_okay=False))
@click.option("--quick", is_flag=True, help="A one-minute smoke version (few batches per epoch).")
def demo(run_dir, quick) -> None:
    """Train a small ResNet on the shipped CIFAR-10 subset, compress it, fine-tune, print before/after."""
    settings = settings_defaults()
    settings.update(model_name="resnet20", width=0.5, pretrain_epochs=15, search_epochs=8, finetune_epochs=8,
                    lam=1.0, finetune_lr=0.05, batch_size=64)
    if quick:
        settings.update(pretrain_epochs=1, search_epochs=1, finetune_epochs=1, max_batches=5)
    _start(settings, run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}", None)


@main.command("share")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Run folder of the result (default: RUN_DIR/share).")
@click.option("--budget", default=1.0, show_default=True, type=float,
              help="Accuracy points below the start a layer's codebook may cost.")
@click.option("--sparsity", default=0.5, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of all weights pruned by one global magnitude threshold.")
@click.option("--ladder", default="2,4,8,16", show_default=True, help="Codebook sizes tried per layer, smallest first.")
@click.option("--significance", default="sparsity", show_default=True,
              type=click.Choice(["sparsity", "sensitivity"]), help="How layers are ranked (least significant first).")
@click.option("--finetune-epochs", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--max-batches", default=None, type=click.IntRange(min=1), help="Cap batches per epoch (quick looks).")
@click.option("--threads", default=None, type=click.IntRange(min=1))
def share_cmd(run_dir, out_dir, budget, sparsity, ladder, significance, finetune_epochs, max_batches, threads) -> None:
    """Chain the second method after a finished run: share the weights of RUN_DIR's compressed model layer by
    layer (issue 20), on the run's own data and task. The model is read as data (weights and the allow-listed
    layer graph); no code named by the folder is imported."""
    if threads:
        torch.set_num_threads(threads)
    try:
        source = Run.open_finished(run_dir)
        model = source.load_model("model")
        raw_model = (source.spec or {}).get("model_name")
    except RunError as exc:
        fail(str(exc))
    try:
        sizes = tuple(int(k) for k in ladder.split(","))
    except ValueError:
        fail(f"--ladder {ladder!r}: write codebook sizes like 2,4,8,16")
    settings = _resumed_settings(source, settings_defaults(), typed_model=raw_model)   # the model is not rebuilt
    settings.update(method="share", finetune_epochs=finetune_epochs, max_batches=max_batches, weights=None,
                    pretrain_epochs=0)
    _, train, test, task, *_ = _prepare_data(settings)
    share = {"budget": budget, "sparsity": sparsity, "ladder": sizes, "significance": significance}
    try:
        from ..methods.share import ShareSettings
        ShareSettings.from_dict(share)
        folder = Path(out_dir) if out_dir else Path(run_dir) / "share"
        run = Run.create(folder, settings, lock=True)
    except (ValueError, RunError) as exc:
        fail(str(exc))
    click.echo(f"share: {source.folder}'s compressed model -> run folder {run.folder}")
    try:
        cfg = CompressConfig(**{**_config(settings).__dict__, "share": share})
        result = compress(model, train, test, task=task, config=cfg, run_dir=run, log=click.echo, summary=False)
    except (ValueError, RuntimeError, OSError) as exc:
        run.discard()
        fail(f"{type(exc).__name__}: {exc}")
    finally:
        run.release()
    click.echo("\n" + format_summary(result.report))
