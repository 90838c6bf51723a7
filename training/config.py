"""Pydantic models of the training config: the `training:` section of a spec. No torch here.

Strict like builder.lang.spec: unknown keys are errors and `true` is not an int. The dataset, the
optimizer and the schedule are tagged by `kind`; a mapping without `kind` gets the default
kind (digits, sgd, cosine), so `--lr 0.1` alone works on a spec without an optimizer section.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from builder.lang.errors import suggest
from builder.lang.spec import StrictModel, rule_error  # the same strictness as specs
from training.flags import MAX_LR
from training.tasks import task_kind

# Finite numbers only: `.inf` and `.nan` are refused where a number is a size, a rate or a count.
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(gt=0, le=10**9)]  # epochs, batch sizes, image counts: bounded, so nothing overflows
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
Betas = Annotated[list[Fraction], Field(min_length=2, max_length=2)]
LearningRate = Annotated[float, Field(gt=0, le=MAX_LR, allow_inf_nan=False)]  # as --lr: torch's float32 never overflows
WeightDecay = Annotated[float, Field(ge=0, le=MAX_LR, allow_inf_nan=False)]  # the same bound, for the same reason


# --- datasets ---------------------------------------------------------------------------------


class Augment(StrictModel):
    """Training-only augmentation at the spec's input size. Evaluation never augments."""

    # Random crop of the image padded on each side by this fraction of its size: a shift of up
    # to 4 px each way at 32x32 for 0.125. 0 turns it off.
    crop_padding: Annotated[float, Field(ge=0, le=0.5)] = 0.125
    # What fills the padding: zeros (black), or reflect (the image mirrored at its edges).
    padding_mode: Literal["zeros", "reflect"] = "zeros"
    hflip: bool = True  # horizontal flips, as hflip_mode says
    # random: each image flipped with probability 1/2 at every step; alternate: each image flipped
    # on every other epoch, from a seeded per-image start (so any two epochs show it both ways).
    hflip_mode: Literal["random", "alternate"] = "random"


class DigitsAugment(Augment):
    """Augment with the defaults of digits: a small shift, and no flip (a flipped digit is another glyph)."""

    crop_padding: Annotated[float, Field(ge=0, le=0.5)] = 0.0625
    padding_mode: Literal["zeros", "reflect"] = "zeros"
    hflip: bool = False
    hflip_mode: Literal["random", "alternate"] = "random"


class _Splits(StrictModel):
    """What every dataset kind accepts: subsets for small first runs and the validation split."""

    task: ClassVar[str] = "classification"  # what the dataset's targets are for (training/tasks)

    # A seeded, stratified subset of the training (test) images; None: all of them. Validation
    # is carved from the training subset.
    train_size: Count | None = None
    test_size: Count | None = None
    # The stratified share of the training images held out for validation (model selection and
    # early stopping) when the dataset ships no validation split; 0: no validation.
    val_fraction: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    split_seed: Annotated[int, Field(ge=0, lt=2**31)] = 0  # the subsets and splits; fixed apart from `seed`


class DigitsData(_Splits):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); no download."""

    kind: Literal["digits"]
    test_fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.2  # at most half: both splits keep every class
    augment: DigitsAugment = DigitsAugment()


class Cifar10Data(_Splits):
    """CIFAR-10 in torchvision's layout: ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}."""

    kind: Literal["cifar10"]
    root: Annotated[str, Field(min_length=1)] = "data"
    download: bool = False  # fetch the 170 MB archive from the internet into `root` when missing
    augment: Augment = Augment()


class ImageFolderData(_Splits):
    """Any ROOT/train/<class>/<image> tree with val/ (validation; else carved from train) and/or
    test/ (held out) alike; every image is resized to the input size."""

    kind: Literal["image_folder"]
    root: Annotated[str, Field(min_length=1)]  # a relative root is resolved against the current directory
    # Decode every image once into memory (cached on disk) instead of per batch: auto does it when
    # the decoded uint8 images take at most a quarter of the available memory.
    in_memory: Literal["auto", True, False] = "auto"
    cache_dir: Annotated[str, Field(min_length=1)] | None = None  # None: $CNN_SPEC_BUILDER_CACHE or ~/.cache
    augment: Augment = Augment()

    @field_validator("in_memory", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: Any) -> Any:
        if value != "auto" and not isinstance(value, bool):
            raise ValueError(f"must be auto, true or false, got {value!r}")
        return value


class FakeData(_Splits):
    """torchvision's FakeData: random images and labels at the spec's input size (smoke tests)."""

    kind: Literal["fake"]
    train_size: Count = 256  # images generated (validation is carved from them)
    test_size: Count = 64
    num_classes: Count | None = None  # None: the spec's num_classes
    augment: Augment = Augment()


# --- segmentation datasets: an image and a mask per sample ------------------------------------

Degrees = Annotated[float, Field(ge=0, le=180, allow_inf_nan=False)]
Jitter = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
RGB = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]


class SegmentationAugment(StrictModel):
    """Training-only joint augmentation: geometric transforms move the image and its mask together
    (nearest for the mask; uncovered mask pixels become ignore_index); colour touches the image only."""

    hflip: bool = True  # with probability 1/2
    vflip: bool = False
    rotate: Degrees = 0.0  # a random rotation of up to this many degrees either way
    scale: Annotated[list[Annotated[float, Field(gt=0, le=4, allow_inf_nan=False)]],
                     Field(min_length=2, max_length=2)] = [1.0, 1.0]  # noqa: RUF012 - a random zoom in [lo, hi]
    translate: Annotated[float, Field(ge=0, le=0.5)] = 0.0  # a random shift of up to this fraction of the size
    brightness: Jitter = 0.0  # colour jitter factors, as torchvision's ColorJitter
    contrast: Jitter = 0.0
    saturation: Jitter = 0.0

    @field_validator("scale")
    @classmethod
    def _ordered(cls, scale: list[float]) -> list[float]:
        if scale[0] > scale[1]:
            raise ValueError(f"must be [low, high] with low <= high, got {scale}")
        return scale


class _SegmentationData(_Splits):
    """What every segmentation dataset accepts: the masks' kind, the classes, the loss."""

    task: ClassVar[str] = "segmentation"
    classes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)] | None = None  # None: 0..n-1
    ignore_index: Annotated[int, Field(ge=0, le=255)] = 255  # mask value that counts for nothing
    loss: Literal["ce", "dice", "ce+dice"] = "ce"  # ce: BCE with logits for one output channel, else cross-entropy
    palette: list[RGB] | None = None  # a colour per class for predicted masks; None: PASCAL VOC's colour map
    augment: SegmentationAugment = SegmentationAugment()


class _MaskFiles(_SegmentationData):
    """Masks read from files."""

    # binary: grayscale 0/255 masks, a pixel is foreground where value / 255 > 0.5 (classes
    # background and foreground); index: each pixel's value is its class (grayscale or palette PNG)
    masks: Literal["binary", "index"] = "index"
    num_classes: Annotated[int, Field(ge=2, le=255)] | None = None  # index masks; None: len(classes), else the spec's


class SegmentationFolderData(_MaskFiles):
    """MMSegmentation's layout: ROOT/img_dir/{train,val,test}/NAME.jpg and ROOT/ann_dir/{train,val,test}/NAME.png,
    image and mask paired by file stem; val/ (else carved from train) and/or test/."""

    kind: Literal["seg_folder"]
    root: Annotated[str, Field(min_length=1)]
    img_dir: Annotated[str, Field(min_length=1)] = "img_dir"
    ann_dir: Annotated[str, Field(min_length=1)] = "ann_dir"
    mask_suffix: str = ""  # the mask of image NAME.EXT is NAME + mask_suffix + .EXT' (e.g. _mask)


class SegmentationCsvData(_MaskFiles):
    """CSVs with `image` and `mask` columns (paths relative to the CSV): ROOT is one such file
    (validation carved from it), or a folder with train.csv and val.csv and/or test.csv."""

    kind: Literal["seg_csv"]
    root: Annotated[str, Field(min_length=1)]


class ShapesData(_SegmentationData):
    """Synthetic, deterministic: discs, squares, triangles and diamonds (one shape kind per class,
    each in its own colour) on noisy backgrounds at the spec's input size; no download."""

    kind: Literal["shapes"]
    train_size: Count = 256  # images generated (validation is carved from them)
    test_size: Count = 64
    num_classes: Annotated[int, Field(ge=2, le=255)] = 4  # with the background; 2: binary masks
    noise: Annotated[float, Field(ge=0, le=1)] = 0.1  # std of the Gaussian noise on a 0..1 scale
    seed: Annotated[int, Field(ge=0, lt=2**31)] = 0  # the images: test images use seed + 1


DatasetConfig = Annotated[
    DigitsData | Cifar10Data | ImageFolderData | FakeData | SegmentationFolderData | SegmentationCsvData | ShapesData,
    Field(discriminator="kind"),
]


# --- optimizers -------------------------------------------------------------------------------

# Which parameters a group takes (training/optim.py): bias, every parameter named `bias`; norm,
# the weights and biases of normalization layers; norm_and_bias, both (timm's no-decay set).
ParamSelector = Literal["bias", "norm", "norm_and_bias"]


class ParamGroup(StrictModel):
    """Parameters that train with their own learning rate and weight decay."""

    params: ParamSelector
    lr_scale: LearningRate = 1.0  # this group's lr is the optimizer's lr x lr_scale (the schedule scales both)
    weight_decay: WeightDecay | None = None  # None: the optimizer's


def _distinct_groups(groups: list[ParamGroup]) -> list[ParamGroup]:
    seen = [g.params for g in groups]
    for i, name in enumerate(seen):
        if name in seen[:i]:
            raise ValueError(f"groups[{i}] selects {name} again (as groups[{seen.index(name)}] does)")
    return groups


# Each parameter joins the first group that selects it; the rest train with the optimizer's settings.
Groups = Annotated[list[ParamGroup], Field(max_length=3)]


class SGDConfig(StrictModel):
    kind: Literal["sgd"]
    lr: LearningRate = 0.05
    momentum: Fraction = 0.9
    nesterov: Annotated[bool, Field(validate_default=True)] = True
    weight_decay: WeightDecay = 5e-4
    groups: Groups = []  # noqa: RUF012 - pydantic copies field defaults

    _groups = field_validator("groups")(_distinct_groups)

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, nesterov: bool, info: ValidationInfo) -> bool:
        if nesterov and info.data.get("momentum") == 0:
            raise ValueError("needs momentum > 0 (set nesterov: false for plain SGD)")
        return nesterov


class _AdamFields(StrictModel):
    """What Adam and AdamW share."""

    lr: LearningRate = 1e-3
    betas: Betas = [0.9, 0.999]  # noqa: RUF012 - pydantic copies field defaults
    eps: PositiveFloat = 1e-8
    groups: Groups = []  # noqa: RUF012 - pydantic copies field defaults

    _groups = field_validator("groups")(_distinct_groups)


class AdamConfig(_AdamFields):
    """Adam; its weight_decay is an L2 penalty added to the gradient."""

    kind: Literal["adam"]
    weight_decay: WeightDecay = 0.0


class AdamWConfig(_AdamFields):
    """AdamW: weight decay decoupled from the gradient step (Loshchilov & Hutter)."""

    kind: Literal["adamw"]
    weight_decay: WeightDecay = 0.01


OptimizerConfig = Annotated[SGDConfig | AdamConfig | AdamWConfig, Field(discriminator="kind")]


# --- learning-rate schedules -----------------------------------------------------------------
# Every schedule is a factor of the optimizer's lr, updated after every step (not every epoch).


class ConstantSchedule(StrictModel):
    kind: Literal["constant"]
    warmup_epochs: NonNegativeFloat = 0.0  # linear ramp from ~0 to lr over this many epochs


class StepSchedule(StrictModel):
    """lr * gamma ** (epochs since warmup // step_size)."""

    kind: Literal["step"]
    step_size: Count = 30
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    warmup_epochs: NonNegativeFloat = 0.0


class CosineSchedule(StrictModel):
    """Half a cosine from lr down to lr * final_factor over the epochs after the warmup."""

    kind: Literal["cosine"]
    final_factor: Fraction = 0.0
    warmup_epochs: NonNegativeFloat = 0.0


class OneCycleSchedule(StrictModel):
    """Smith's one-cycle: cosine up from lr/div_factor to lr, then down to lr/(div*final_div)."""

    kind: Literal["one_cycle"]
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3
    div_factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 25.0
    final_div_factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1e4


class TriangleSchedule(StrictModel):
    """Linear from start_factor up to 1 at peak (a share of the run's steps), then linear down to
    end_factor at the last step (airbench94's: 0.2, 0.23, 0.07)."""

    kind: Literal["triangle"]
    start_factor: Fraction = 0.2
    peak: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.23
    end_factor: Fraction = 0.07


ScheduleConfig = Annotated[
    CosineSchedule | ConstantSchedule | StepSchedule | OneCycleSchedule | TriangleSchedule,
    Field(discriminator="kind"),
]

# --- weight averaging and test-time augmentation ------------------------------------------------


class EMAConfig(StrictModel):
    """An exponential moving average of the weights (training/ema.py): every `every` steps,
    ema = d * ema + (1 - d) * weights, floating-point buffers (BatchNorm statistics) averaged
    alike and integer ones copied. Evaluation and the saved weights use the average."""

    decay: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.999
    every: Count = 1  # steps between updates
    # d = decay x (share of the schedule's steps done) ** ramp: 0 keeps d = decay; airbench94's
    # lookahead ramps with 3, so the early average follows the weights closely.
    ramp: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = 0.0
    # Lookahead (Zhang et al.): after each update the weights are set to the average, and train on from there.
    lookahead: bool = False


class TTAConfig(StrictModel):
    """Test-time augmentation of every evaluation (classification; training/tta.py): each image's
    logits are the weighted mean of the model's logits on its views."""

    hflip: bool = True  # the image and its mirror, each half the weight
    # Also the image shifted by this many pixels down-right and up-left (each a quarter of the
    # weight, the unshifted view the other half: airbench94's translate TTA); 0: no shifts.
    translate: Annotated[int, Field(ge=0, le=64)] = 0
    # What fills the gap a shift leaves: the image mirrored at its edges, or its edge pixels repeated.
    padding_mode: Literal["reflect", "replicate"] = "reflect"


class EarlyStopping(StrictModel):
    """Stop when `metric` has not improved by more than `min_delta` for `patience` epochs."""

    # A validation metric of the task (val_loss, val_acc; ...); None: the task's headline (val_acc).
    metric: str | None = None
    patience: Count = 5
    min_delta: NonNegativeFloat = 0.0


class InitConfig(StrictModel):
    """Start from saved weights (a run's .safetensors, or `port-weights` output) instead of random."""

    weights: Annotated[str, Field(min_length=1)]
    # Tensors named in the file but absent from the model, or the reverse, are errors unless allowed.
    allow_unexpected: bool = False
    allow_missing: bool = False
    # Parameters under these prefixes (e.g. features, or features.0) are not trained.
    freeze: list[Annotated[str, Field(min_length=1)]] = []  # noqa: RUF012 - pydantic copies field defaults


DEFAULT_KINDS = {"dataset": "digits", "optimizer": "sgd", "schedule": "cosine"}


class TrainingConfig(StrictModel):
    """How to train a spec. Every field has a default, so `training:` may be left out."""

    dataset: DatasetConfig = DigitsData(kind="digits")
    epochs: Count = 10
    batch_size: Count = 128
    optimizer: OptimizerConfig = SGDConfig(kind="sgd")
    schedule: ScheduleConfig = CosineSchedule(kind="cosine")
    label_smoothing: Fraction = 0.0
    ema: EMAConfig | None = None  # None: no weight averaging
    tta: TTAConfig | None = None  # None: every evaluation sees each image once, as it is
    grad_clip: PositiveFloat | None = None  # max global L2 norm of the gradients; None: no clipping
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    eval_every: Count = 1  # evaluate on the test split every N epochs (and after the last)
    # The validation metric that picks best.safetensors (never the test split): val_loss or one the
    # task logs (classification: val_acc); None: the task's headline metric (val_acc).
    monitor: Annotated[str | None, Field(validate_default=True)] = None
    early_stopping: EarlyStopping | None = None  # None: train all epochs
    init: InitConfig | None = None  # None: random initial weights from `seed`
    workers: Annotated[int, Field(ge=0, le=1024)] = 0  # data-loader processes decoding image_folder images
    # torch's CPU threads for the run; None: torch's default (one per core). On a CPU shared with
    # other work, fewer threads than cores avoids oversubscription; CPU results are bit-exact only
    # for a fixed thread count.
    threads: Annotated[int, Field(ge=1, le=1024)] | None = None
    device: str = "auto"  # auto: cuda, then mps, then cpu
    # bf16/fp16: autocast mixed precision; auto: bf16 where the device computes it natively, else fp32
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"  # under torchrun; auto: nccl on CUDA, else gloo

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            raise ValueError(f"must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
        return device

    @field_validator("tta")
    @classmethod
    def _tta_classifies(cls, tta: TTAConfig | None, info: ValidationInfo) -> TTAConfig | None:
        dataset = info.data.get("dataset")
        if tta is not None and dataset is not None and dataset.task != "classification":
            raise ValueError(f"test-time augmentation averages class scores: it serves classification datasets, "
                             f"not {dataset.task} ones (set tta: null)")
        return tta

    @field_validator("monitor")
    @classmethod
    def _monitored_metric(cls, monitor: str | None, info: ValidationInfo) -> str | None:
        dataset = info.data.get("dataset")
        if dataset is None:  # the dataset is wrong: that is the error reported
            return monitor
        kind = task_kind(dataset.task)
        if monitor is None:
            return kind.default_monitor
        if monitor not in kind.monitorable:
            raise ValueError(unknown_metric(monitor, kind.name, kind.monitorable))
        return monitor

    @field_validator("early_stopping")
    @classmethod
    def _watched_metric(cls, es: EarlyStopping | None, info: ValidationInfo) -> EarlyStopping | None:
        dataset = info.data.get("dataset")
        if es is None or dataset is None:
            return es
        kind = task_kind(dataset.task)
        if es.metric is None:
            return es.model_copy(update={"metric": kind.default_monitor})
        if es.metric not in kind.monitorable:
            raise rule_error("metric", unknown_metric(es.metric, kind.name, kind.monitorable))
        return es

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: Any) -> Any:
        """`optimizer: {lr: 0.1}` means the default kind of optimizer (sgd)."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, kind in DEFAULT_KINDS.items():
            if isinstance(out.get(name), dict) and "kind" not in out[name]:
                out[name] = {"kind": kind, **out[name]}
        return out


def unknown_metric(name: str, task: str, known: tuple[str, ...]) -> str:
    return f"unknown metric '{name}': the {task} task logs {', '.join(known)}" + suggest(name, known)


# Fields a resumed run may change without breaking its recipe (the rest must match the run).
RESUMABLE_CHANGES = frozenset({"epochs", "eval_every", "workers", "device", "compile", "dist_backend", "threads"})
