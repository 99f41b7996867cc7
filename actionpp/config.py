"""Typed, validated run configuration: one training loop, a method is configuration.

A :class:`Config` is a tree of frozen dataclasses loaded from a YAML profile
(``actionpp/configs/<name>.yaml``, or any path) plus ``--set key=value``
overrides (dotted keys, values parsed as YAML scalars). Every unknown key and
every value of the wrong type is a :class:`ConfigError` naming the dotted key.

Resolution order (later wins):

1. the dataclass defaults below;
2. the profile file (a profile may start from another with ``base: <name>``);
3. the ``--set`` overrides;
4. the method preset: ``method.name`` expands to the switches of that method
   (:data:`METHOD_PRESETS`) for every ``method.*`` switch that was *not* given
   explicitly in 2 or 3, so ``--set method.name=actionpp --set method.ats=false``
   is ACTION++ without ATS.

Profiles (``paper`` / ``official`` per dataset, following method.md section 8,
plus ``phantom_lab`` and ``phantom_smoke`` for CPUs) carry a comment on every
value saying where it comes from. :meth:`Config.to_dict` gives plain data and
:func:`config_hash` a stable 16-hex-digit digest of the settings that change
results (presentation-only keys such as the progress bar are left out).

Why one module of this length: the whole run schema (one frozen dataclass per section, each
field with its reason), the method presets and the validation that names the offending key
belong together; split up, a reader would have to join them again to know what a run is.

Taught in notebooks/04_train.ipynb.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from actionpp.data.spec import dataset_spec

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "MethodConfig",
    "TrainConfig",
    "LossConfig",
    "AncoConfig",
    "SaaclConfig",
    "TemperatureConfig",
    "PretrainConfig",
    "AugmentConfig",
    "EvalConfig",
    "RuntimeConfig",
    "Config",
    "METHOD_PRESETS",
    "HASH_EXCLUDED_KEYS",
    "HASH_OMITTED_WHEN",
    "load_config",
    "config_from_dict",
    "stored_config",
    "config_hash",
    "diff_dicts",
    "profile_names",
    "profile_path",
    "parse_override",
    "safe_yaml",
    "NUMERIC_RANGES",
    "MAX_CONFIG_BYTES",
    "numeric_keys",
]


class ConfigError(ValueError):
    """A configuration problem; the message names the dotted key (and file when known)."""


# --------------------------------------------------------------------------- sections


# Every field carries its reason and where its default comes from ("method.md N": docs/method.md
# section N; "official": the official ACTION++ code; "SSL4MIS" / "UA-MT": the community baselines;
# "ours": a choice of this project). The profiles (configs/*.yaml) say the same per value.


@dataclass(frozen=True)
class DataConfig:
    """Which data, at which size (the dataset itself is a :class:`~actionpp.data.spec.DatasetSpec`)."""

    dataset: str = "acdc"  # a registered DatasetSpec (actionpp.data.spec): acdc (method.md 6) or la
    root: str = "phantom"  # "phantom" (generated on first use), "shared", a dataset folder, or a pack file (ours)
    phantom_preset: Literal["acdc", "longtail"] = "acdc"  # cardiac phantom's class shares; longtail: rarer RV (ours)
    phantom_patients: int | None = None  # None = the phantom's default patient count (its spec's; ours)
    phantom_seed: int = 0  # the phantom's own seed: the same seed writes the same files (ours)
    labelled: int | None = 7  # ACDC: labelled patients (3 = 5 %, 7 = 10 %; SSL4MIS); LA: labelled scans; None = all
    size: int = 256  # 2D: every slice resized (nearest) to size x size (method.md 6, SSL4MIS)
    crop: tuple[int, int, int] = (112, 112, 80)  # 3D: random training crop and evaluation window (method.md 6, UA-MT)
    num_classes: int = 4  # counts background; must equal the dataset spec's classes (ACDC 4, LA 2)
    val_split: str = "val"  # split used for model selection; never "test" (method.md 6)
    val_max_volumes: int | None = None  # evaluate only the first N validation volumes (None = all; ours, for speed)


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and heads."""

    arch: Literal["unet2d", "vnet3d"] = "unet2d"  # the dataset spec's: SSL4MIS 2D U-Net / UA-MT 3D V-Net (method.md 6)
    in_channels: int = 1  # ACDC and LA images have one channel
    rep_dim: int = 128  # representation head output = class-centre dimension (method.md 8: paper 128)
    proj_hidden: int = 512  # ISD projection MLP hidden width (pre-training; ours, BYOL style)
    proj_dim: int = 128  # ISD projection output width (pre-training; method.md 5)


@dataclass(frozen=True)
class MethodConfig:
    """The method: a name that expands to switches (see :data:`METHOD_PRESETS`)."""

    name: str = "actionpp"  # a key of METHOD_PRESETS: supervised, mean_teacher, action, actionpp, ablations
    pretrain: bool = True  # run the ISD pre-training phase (global + local distillation + supervised; method.md 5)
    finetune: bool = True  # run the fine-tuning phase
    teacher: bool = True  # keep an EMA teacher (needed by every unlabelled term and SAACL; method.md 5)
    unsup: bool = True  # pseudo-label CE on unlabelled images (ACTION, method.md 5)
    consistency: bool = False  # mean-teacher MSE consistency on unlabelled images (SSL4MIS mean teacher)
    anco: bool = True  # anatomical contrast, ReCo style (ACTION, method.md 5)
    saacl: bool = True  # supervised adaptive anatomical contrast (ACTION++, method.md 3)
    ats: bool = True  # temperatures from the schedule (method.md 4); False: fixed temperature.fixed_tau

    @property
    def finetune_unlabelled(self) -> bool:
        """Fine-tuning reads unlabelled images (pseudo-labels, consistency or AnCo's unlabelled pixels)."""
        return self.unsup or self.consistency or self.anco

    @property
    def uses_unlabelled(self) -> bool:
        """The method reads unlabelled images in some phase (pre-training always does)."""
        return self.pretrain or self.finetune_unlabelled

    @property
    def uses_teacher(self) -> bool:
        """Some switched-on term needs the EMA teacher (its targets, its view of the anchors, or ISD)."""
        return self.uses_unlabelled or self.saacl


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (each phase restarts SGD and its poly decay, as the two official scripts do)."""

    pretrain_iters: int = 10_000  # method.md 6: paper ACDC 10 k pre-training
    finetune_iters: int = 20_000  # method.md 6: paper ACDC 20 k fine-tuning
    batch_labelled: int = 4  # paper batch 8, read as 4 labelled + 4 unlabelled (official 2D split)
    batch_unlabelled: int = 4  # see batch_labelled
    lr: float = 0.01  # method.md 6: SGD lr 0.01
    momentum: float = 0.9  # method.md 6
    weight_decay: float = 1e-4  # method.md 6
    poly_power: float = 0.9  # lr = lr0 * (1 - it / max_it) ** poly_power (method.md 6)
    ema_momentum: float = 0.99  # method.md 5: EMA teacher momentum
    nesterov_finetune: bool = False  # Nesterov momentum in fine-tuning (official 2D and 3D fine-tuning scripts)
    # student forward of the labelled + unlabelled batch: one BatchNorm batch, or two (official fine-tuning)
    finetune_forward: Literal["joint", "separate"] = "joint"
    # EMA teacher's BatchNorm / dropout: eval (running statistics) or train (official ema_model.train())
    teacher_mode: Literal["eval", "train"] = "eval"


@dataclass(frozen=True)
class LossConfig:
    """Loss weights of the fine-tuning objective (pre-training weights live in ``pretrain``)."""

    sup: float = 1.0  # 0.5 (CE + Dice) on labelled images, times this (method.md 5)
    unsup: float = 1.0  # pseudo-label CE weight (method.md 5)
    unsup_threshold: float = 0.97  # pseudo-label confidence defining the per-image weight (method.md 5)
    consistency: float = 0.1  # mean teacher: final weight of the MSE consistency (SSL4MIS 0.1)
    consistency_rampup: int = 1000  # iterations of the sigmoid ramp-up exp(-5 (1 - t)^2) (SSL4MIS form; ours length)
    consistency_noise: float = 0.1  # teacher input noise, clamped to +-2x this (SSL4MIS)
    anco: float = 1.0  # method.md 8: paper "equal combination" (official x 0.01)
    saacl: float = 1.0  # method.md 8: paper "equal combination" (official x 0.01)


@dataclass(frozen=True)
class AncoConfig:
    """Anatomical contrast (ReCo style)."""

    queries_per_class: int = 256  # method.md 5: hard queries per class
    negatives: int = 512  # method.md 5: negatives per query
    strong_threshold: float = 0.97  # hard queries: student confidence below this (method.md 5)
    weak_threshold: float = 0.7  # unlabelled pixels need teacher confidence >= this (method.md 5)
    pixels_per_class: int = 1024  # candidate pixels sampled per class and batch for the head (ours, method.md 9)


@dataclass(frozen=True)
class SaaclConfig:
    """Supervised adaptive anatomical contrast (method.md 1-3).

    Temperature precedence (one rule, :func:`actionpp.train.objective.temperature_schedules`):
    ``fixed_tau``, when set, is SAACL's temperature whatever ``method.ats`` and ``temperature.*`` say;
    otherwise SAACL follows ATS (the cosine with low end ``tau_min`` when set; a ``step`` schedule is AnCo's)
    or, without ATS, ``temperature.fixed_tau``. Setting both ``tau_min`` and ``fixed_tau`` is an error
    (``tau_min`` could never act).
    """

    lambda_a: float = 0.2  # weight of the class-centre term (method.md 3 / 8: paper 0.2; official 2D 0.1)
    anchors_per_class: int = 256  # ground-truth anchors per class present in the labelled batch (method.md 3)
    queue_size: int = 12_288  # FIFO of teacher embeddings, the anchors' other positives and negatives (official)
    centre_method: Literal["optimize", "simplex", "tsc", "tammes"] = "optimize"  # class centres (method.md 1)
    allocator_momentum: float = 0.1  # EMA weight of the batch mean in the running class means (method.md 2: official)
    assignment: Literal["hungarian", "random", "identity"] = "hungarian"  # method.md 2 (ablation: random)
    # method.md 3: how the centre term enters: official "averaged" (one of the 1/|P_i| positives) or "separate"
    centre_term: Literal["averaged", "separate"] = "averaged"
    tau_min: float | None = None  # SAACL's own ATS low end (official 2D 0.07); None = temperature.tau_min (paper)
    fixed_tau: float | None = None  # SAACL at a fixed temperature, even with ATS (official 3D 0.07); None = scheduled


@dataclass(frozen=True)
class TemperatureConfig:
    """Contrastive temperature: schedule when method.ats, else fixed_tau."""

    kind: Literal["cosine", "cosine_epoch", "constant", "step"] = "cosine"  # method.md 4: per-iteration cosine
    tau_min: float = 0.1  # method.md 4: paper tau_min
    tau_max: float = 1.0  # method.md 4: paper tau_max
    period: float | None = None  # cosine: iterations per cycle; cosine_epoch: epochs; None = one cycle over fine-tuning
    epoch_iters: int | None = None  # cosine_epoch: iterations per epoch (None = unlabelled images / batch; official)
    step_milestones: tuple[int, ...] = ()  # step: fine-tuning iterations where tau changes (ours, an ablation)
    step_values: tuple[float, ...] = ()  # step: len(step_milestones) + 1 temperatures
    fixed_tau: float = 0.5  # ACTION's fixed temperature (method.md 5; used when method.ats is false)


@dataclass(frozen=True)
class PretrainConfig:
    """ISD global + local distillation (ACTION pre-training)."""

    memory_bank: int = 36  # method.md 5: ISD memory bank of 36 teacher embeddings (images)
    tau_s: float = 0.1  # method.md 5: ISD student temperature
    tau_t: float = 0.01  # method.md 5: ISD teacher temperature (ACDC)
    patch: int = 64  # local: pooled windows of the output map (method.md 5: 64 x 64)
    stride: int = 32  # method.md 5: window stride
    global_weight: float = 1.0  # official code: global + local + supervised, equal weights
    local_weight: float = 1.0  # official code
    sup: float = 1.0  # method.md 5: plus the supervised loss on labelled images
    tau_max: float = 1.0  # method.md 4: ATS in pre-training: tau_s and tau_t each cosine from here to their value
    period: float | None = None  # ATS period in pre-training (iterations, or epochs for cosine_epoch); None = one cycle


@dataclass(frozen=True)
class AugmentConfig:
    """Batched on-device augmentation."""

    labelled_rotate: bool = True  # method.md 8: paper labelled augmentation = rotation + flip (official 2D: none)
    labelled_flip: bool = True  # method.md 8
    mix: Literal["cutmix", "classmix", "none"] = "cutmix"  # strong view of the unlabelled batch (method.md 5)
    jitter: bool = True  # colour jitter in the strong view (method.md 5)
    blur: bool = True  # Gaussian blur in the strong view (method.md 5)


@dataclass(frozen=True)
class EvalConfig:
    """Validation during training and model selection."""

    every: int = 1000  # iterations between validations (0 = only at the end; ours)
    select: Literal["best", "last"] = "best"  # which checkpoint a finished run reports (official: last, method.md 6)
    batch: int = 16  # slices per forward at validation (speed only)


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the loop runs (device, precision, logging, checkpoints)."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0  # every generator of a run derives from it (actionpp.train.state)
    deterministic: bool = False  # torch.use_deterministic_algorithms(True)
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 autocast on CUDA only
    compile: bool = False  # torch.compile the student forward
    channels_last: bool = True  # networks and inputs channels-last: 0.85x the CPU step (docs/benchmarks.md)
    log_every: int = 50  # iterations per log line (the loss terms are read from the device only then)
    grad_norms: bool = True  # at log iterations, log each loss term's gradient norm and share on the backbone
    checkpoint_every: int = 1000  # iterations between last.pt writes (0 = phase ends only)
    progress: bool = True  # a tqdm bar
    tensorboard: bool = False  # also write TensorBoard events


@dataclass(frozen=True)
class Config:
    """A whole run. Build with :func:`load_config`; every section is frozen."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    anco: AncoConfig = field(default_factory=AncoConfig)
    saacl: SaaclConfig = field(default_factory=SaaclConfig)
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), YAML / JSON ready."""
        return _plain(dataclasses.asdict(self))

    def replace(self, overrides: Sequence[str] | Mapping[str, Any]) -> Config:
        """A new config with dotted overrides applied (``["train.lr=0.1"]`` or ``{"train.lr": 0.1}``).

        The method preset is *not* re-expanded: switches keep their current values
        unless overridden here.
        """
        raw = self.to_dict()
        pairs = _override_pairs(overrides)
        for key, value in pairs:
            _set_dotted(raw, key, value, source="override")
        return config_from_dict(raw, expand_method=False)

    def hash(self) -> str:
        """Same as :func:`config_hash`."""
        return config_hash(self)

    @property
    def total_iters(self) -> int:
        """Iterations over both phases that are switched on."""
        return self.pretrain_iters + self.finetune_iters

    @property
    def pretrain_iters(self) -> int:
        """Pre-training iterations actually run (0 when the phase is off)."""
        return self.train.pretrain_iters if self.method.pretrain else 0

    @property
    def finetune_iters(self) -> int:
        """Fine-tuning iterations actually run (0 when the phase is off)."""
        return self.train.finetune_iters if self.method.finetune else 0


# --------------------------------------------------------------------------- methods

_ALL_OFF = dict(
    pretrain=False, finetune=True, teacher=False, unsup=False, consistency=False, anco=False, saacl=False, ats=False
)

METHOD_PRESETS: dict[str, dict[str, bool]] = {
    # labelled images only (the lower bound)
    "supervised": dict(_ALL_OFF),
    # SSL4MIS mean teacher: supervised + MSE consistency between student and teacher softmax
    "mean_teacher": {**_ALL_OFF, "teacher": True, "consistency": True},
    # ACTION: pre-training, then pseudo-labels + anatomical contrast at a fixed temperature
    "action": {**_ALL_OFF, "pretrain": True, "teacher": True, "unsup": True, "anco": True},
    # ACTION++: ACTION + SAACL + ATS
    "actionpp": {
        **_ALL_OFF,
        "pretrain": True,
        "teacher": True,
        "unsup": True,
        "anco": True,
        "saacl": True,
        "ats": True,
    },
    # ablations of the paper (Table 3 on LA): each switch can also be set directly
    "actionpp_no_saacl": {**_ALL_OFF, "pretrain": True, "teacher": True, "unsup": True, "anco": True, "ats": True},
    "actionpp_no_ats": {**_ALL_OFF, "pretrain": True, "teacher": True, "unsup": True, "anco": True, "saacl": True},
    "actionpp_finetune_only": {**_ALL_OFF, "teacher": True, "unsup": True, "anco": True, "saacl": True, "ats": True},
}
"""Switches each ``method.name`` expands to (explicit ``method.*`` settings win).

Ablations that are values rather than switches: random assignment
(``saacl.assignment=random``), ``saacl.lambda_a``, the tau range
(``temperature.tau_min`` / ``tau_max``) and the period (``temperature.period``).
"""

HASH_EXCLUDED_KEYS: frozenset[str] = frozenset(
    {
        "runtime.progress",
        "runtime.tensorboard",
        "runtime.device",
        "runtime.log_every",
        "runtime.grad_norms",
        "eval.batch",
    }
)
"""Keys that do not change what a run computes; they are left out of :func:`config_hash`,
so a run may be resumed with another progress-bar, logging or device setting."""

HASH_OMITTED_WHEN: dict[str, Any] = {
    "train.finetune_forward": "joint", "train.teacher_mode": "eval", "runtime.channels_last": False,
}
"""Keys added after runs were published, left out of :func:`config_hash` while they hold the value that
reproduces those runs: a run of an older version keeps its hash, so it is still found finished, or
resumed, by this one."""

_SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}


# --------------------------------------------------------------------------- YAML in bounded time and memory

MAX_CONFIG_BYTES = 256 * 1024  # a profile is a few KiB; this bounds parsing time and memory for any input
_MAX_DEPTH = 32  # sections nest two deep; a list of lists a few more


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases (``*name``: a few lines of them expand to gigabytes, the
    "billion laughs") and with a nesting limit (deep nesting exhausts the stack)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed here", mark)
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {_MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def safe_yaml(text: str, source: str) -> Any:
    """Parse ``text`` as YAML in bounded time and memory: at most :data:`MAX_CONFIG_BYTES`, no aliases, at
    most 32 levels of nesting, only plain data (``yaml.safe_load``'s types). :class:`ConfigError` naming
    ``source`` (a file, ``override data.root``, ...) for anything else, a parse error included."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None
    except (ValueError, RecursionError, OverflowError) as exc:  # e.g. an integer of 5000 digits
        raise ConfigError(f"{source}: invalid YAML value ({' '.join(str(exc).split())[:200]})") from None


# --------------------------------------------------------------------------- profiles


def _configs_dir() -> Path:
    return Path(__file__).resolve().parent / "configs"


def profile_names() -> list[str]:
    """Names of the bundled profiles (``acdc_paper``, ``phantom_lab``, ...)."""
    return sorted(p.stem for p in _configs_dir().glob("*.yaml"))


def profile_path(name_or_path: str | Path) -> Path:
    """Resolve a profile name or a YAML path; :class:`ConfigError` lists the names when unknown."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist" if not p.exists() else f"config {p}: is not a file")
        return p
    candidate = _configs_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"unknown config {str(name_or_path)!r}: not a file and not one of {', '.join(profile_names())}")


def _read_profile(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = profile_path(name_or_path)
    if path.resolve() in _seen:
        raise ConfigError(f"config {path}: 'base' chain loops back to itself")
    if len(_seen) >= 16:
        raise ConfigError(f"config {path}: 'base' chain is longer than 16 files")
    try:
        with open(path, "rb") as fh:
            blob = fh.read(MAX_CONFIG_BYTES + 1)
        text = blob.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path}: cannot be read ({exc})") from exc
    if len(blob) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; a profile is a few lines")
    raw = safe_yaml(text, f"config {path}")
    if raw is None:  # an empty file (or only comments): never "all defaults" by accident
        raise ConfigError(
            f"config {path}: the file is empty; a profile must be a mapping of sections (data:, train:, ...)"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"config {path}: 'base' must be a profile name or path, got {base!r}")
    base_path = Path(base)
    if not base_path.is_absolute() and (path.parent / base).suffix in (".yaml", ".yml"):
        base_path = path.parent / base
    parent = _read_profile(base_path if base_path.suffix else base, _seen + (path.resolve(),))
    return _deep_merge(parent, raw, source=str(path))


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any], source: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, source)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=0.1"`` -> ``("train.lr", 0.1)``; the value is parsed as a YAML scalar / flow value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    parsed = safe_yaml(value, f"override {key}") if value.strip() != "" else ""
    return key, parsed


def _override_pairs(overrides: Sequence[str] | Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [(str(k), v) for k, v in overrides.items()]
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, got the string {overrides!r}")
    return [parse_override(o) for o in overrides]


def _set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{source}: key {key!r} must be section.field (sections: {', '.join(_SECTIONS)})")
    section, name = parts
    if section not in _SECTIONS:
        raise ConfigError(
            f"{source}: unknown key {key!r} (unknown section {section!r}; sections: {', '.join(_SECTIONS)})"
        )
    sec = raw.setdefault(section, {})
    if not isinstance(sec, dict):
        raise ConfigError(f"{source}: section {section!r} must be a mapping")
    sec[name] = value


# --------------------------------------------------------------------------- validation


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the value (ints widen to float, lists to tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue  # the next member of the union may take it
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in args:
            return "on" if value else "off"  # YAML 1.1 reads on / off as booleans: runtime.amp=off
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool (true/false), got {value!r} ({type(value).__name__})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {value!r} ({type(value).__name__})")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {value!r} ({type(value).__name__})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {value!r} ({type(value).__name__})")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")  # pragma: no cover - programming error


def _build_section(cls: type, raw: Any, section: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{section}: expected a mapping of fields, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {section}.{unknown[0]!s}"
            + (f" (and {', '.join(map(str, unknown[1:]))})" if len(unknown) > 1 else "")
            + f"; {section} has: {', '.join(sorted(names))}"
        )
    kwargs = {name: _coerce(value, hints[name], f"{section}.{name}") for name, value in raw.items()}
    return cls(**kwargs)


_SEED_MAX = 2**32 - 1
_INF = float("inf")

NUMERIC_RANGES: dict[str, tuple[float, float, str]] = {
    # key: (low, high, bounds) with bounds "[]", "[)", "(]" or "()"; a tuple setting bounds each element.
    # Every int / float setting has a row (tests/test_ownership_config.py checks it); floats must be finite.
    "data.phantom_patients": (2, _INF, "[)"),  # the ACDC phantom needs 3 (train / val / test): checked below
    "data.phantom_seed": (0, _SEED_MAX, "[]"),
    "data.labelled": (1, _INF, "[)"),  # at most what the data hold: checked when the data are read
    "data.size": (16, 4096, "[]"),
    "data.crop": (16, 1024, "[]"),
    "data.num_classes": (2, 256, "[]"),  # labels are uint8
    "data.val_max_volumes": (1, _INF, "[)"),
    "model.in_channels": (1, 1, "[]"),  # ACDC and LA images have one channel
    "model.rep_dim": (2, _INF, "[)"),
    "model.proj_hidden": (1, _INF, "[)"),
    "model.proj_dim": (1, _INF, "[)"),
    "train.pretrain_iters": (0, _INF, "[)"),
    "train.finetune_iters": (0, _INF, "[)"),
    "train.batch_labelled": (1, _INF, "[)"),
    "train.batch_unlabelled": (0, _INF, "[)"),
    "train.lr": (0, _INF, "()"),
    "train.momentum": (0, 1, "[]"),
    "train.weight_decay": (0, _INF, "[)"),
    "train.poly_power": (0, _INF, "[)"),
    "train.ema_momentum": (0, 1, "[]"),
    "loss.sup": (0, _INF, "[)"),
    "loss.unsup": (0, _INF, "[)"),
    "loss.unsup_threshold": (0, 1, "[]"),
    "loss.consistency": (0, _INF, "[)"),
    "loss.consistency_rampup": (0, _INF, "[)"),  # 0 = no ramp-up
    "loss.consistency_noise": (0, _INF, "[)"),
    "loss.anco": (0, _INF, "[)"),
    "loss.saacl": (0, _INF, "[)"),
    "anco.queries_per_class": (1, _INF, "[)"),
    "anco.negatives": (1, _INF, "[)"),
    "anco.strong_threshold": (0, 1, "[]"),
    "anco.weak_threshold": (0, 1, "[]"),
    "anco.pixels_per_class": (1, _INF, "[)"),
    "saacl.lambda_a": (0, _INF, "[)"),
    "saacl.anchors_per_class": (1, _INF, "[)"),
    "saacl.queue_size": (0, _INF, "[)"),
    "saacl.allocator_momentum": (0, 1, "[]"),
    "saacl.tau_min": (0, _INF, "()"),
    "saacl.fixed_tau": (0, _INF, "()"),
    "temperature.tau_min": (0, _INF, "()"),
    "temperature.tau_max": (0, _INF, "()"),
    "temperature.period": (0, _INF, "()"),
    "temperature.epoch_iters": (1, _INF, "[)"),
    "temperature.step_milestones": (0, _INF, "[)"),  # and increasing: checked below
    "temperature.step_values": (0, _INF, "()"),
    "temperature.fixed_tau": (0, _INF, "()"),
    "pretrain.memory_bank": (1, _INF, "[)"),
    "pretrain.tau_s": (0, _INF, "()"),
    "pretrain.tau_t": (0, _INF, "()"),
    "pretrain.patch": (1, _INF, "[)"),
    "pretrain.stride": (1, _INF, "[)"),
    "pretrain.global_weight": (0, _INF, "[)"),
    "pretrain.local_weight": (0, _INF, "[)"),
    "pretrain.sup": (0, _INF, "[)"),
    "pretrain.tau_max": (0, _INF, "()"),
    "pretrain.period": (0, _INF, "()"),
    "eval.every": (0, _INF, "[)"),
    "eval.batch": (1, _INF, "[)"),
    "runtime.seed": (0, _SEED_MAX, "[]"),
    "runtime.log_every": (1, _INF, "[)"),
    "runtime.checkpoint_every": (0, _INF, "[)"),
}
"""The valid range of every numeric setting, checked where a config is read (:func:`config_from_dict`)."""


def numeric_keys() -> list[str]:
    """Dotted keys of every setting whose type is a number (int or float, possibly optional or a tuple)."""
    out = []
    for section, cls in _SECTIONS.items():
        for name, tp in typing.get_type_hints(cls).items():
            if _is_numeric(tp):
                out.append(f"{section}.{name}")
    return out


def _is_numeric(tp: Any) -> bool:
    if tp in (int, float):
        return True
    if typing.get_origin(tp) not in (typing.Union, types.UnionType, tuple):
        return False
    return any(_is_numeric(a) for a in typing.get_args(tp) if a is not Ellipsis and a is not type(None))


def _range_text(lo: float, hi: float, bounds: str) -> str:
    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    if hi == _INF:
        return f"must be {'>=' if bounds[0] == '[' else '>'} {num(lo)}"
    if lo == hi:
        return f"must be {num(lo)}"
    return f"must be in {bounds[0]}{num(lo)}, {num(hi)}{bounds[1]}"


def _check_ranges(cfg: Config) -> None:
    """Every numeric setting within :data:`NUMERIC_RANGES` (floats finite); :class:`ConfigError` naming the key."""
    for key in numeric_keys():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None:
            continue
        lo, hi, bounds = NUMERIC_RANGES[key]
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            ok = (v >= lo if bounds[0] == "[" else v > lo) and (v <= hi if bounds[1] == "]" else v < hi)
            if not ok:
                raise ConfigError(f"{key}: {_range_text(lo, hi, bounds)}, got {value!r}")
    d, t = cfg.data, cfg.temperature
    _check_dataset(cfg)
    if any(b <= a for a, b in zip(t.step_milestones, t.step_milestones[1:])):
        raise ConfigError(f"temperature.step_milestones: must increase, got {list(t.step_milestones)}")
    if cfg.train.nesterov_finetune and cfg.finetune_iters and cfg.train.momentum == 0:
        raise ConfigError("train.momentum: Nesterov fine-tuning (train.nesterov_finetune) needs a momentum > 0, "
                          "got 0.0")
    if cfg.model.arch == "vnet3d" and cfg.method.pretrain and cfg.pretrain.patch > min(d.crop):
        raise ConfigError(f"pretrain.patch: must fit in the smallest side of data.crop={list(d.crop)}, "
                          f"got {cfg.pretrain.patch}")


def _check_dataset(cfg: Config) -> None:
    """The data settings against the dataset's spec (:mod:`actionpp.data.spec`): a registered dataset, its
    architecture and class count, enough phantom patients for its splits. :class:`ConfigError` naming the key."""
    d = cfg.data
    try:
        spec = dataset_spec(d.dataset)
    except ValueError as exc:
        raise ConfigError(f"data.dataset: {exc}") from None
    if cfg.model.arch != spec.arch:
        raise ConfigError(f"model.arch: data.dataset={d.dataset!r} trains with {spec.arch}, got {cfg.model.arch!r}")
    if d.num_classes != spec.num_classes:
        raise ConfigError(f"data.num_classes: data.dataset={d.dataset!r} has {spec.num_classes} classes "
                          f"({', '.join(spec.class_names)}), got {d.num_classes}")
    least = spec.phantom.min_patients
    if d.phantom_patients is not None and d.phantom_patients < least:
        raise ConfigError(f"data.phantom_patients: the {spec.title} phantom needs at least {least} patients "
                          f"({' / '.join(spec.splits)}), got {d.phantom_patients}")


def _check_values(cfg: Config) -> None:
    """Range checks that types cannot express; each error names the key."""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            value = getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1])
            raise ConfigError(f"{key}: {msg}, got {value!r}")

    if cfg.method.name not in METHOD_PRESETS:
        raise ConfigError(f"method.name: unknown method {cfg.method.name!r}; known: {', '.join(METHOD_PRESETS)}")
    need(cfg.data.size >= 16 and cfg.data.size % 16 == 0, "data.size", "must be a multiple of 16 (four 2x poolings)")
    need(cfg.data.num_classes >= 2, "data.num_classes", "must be >= 2 (background counts)")
    need(cfg.data.labelled is None or cfg.data.labelled >= 1, "data.labelled", "must be >= 1 or null (= all)")
    need(all(c >= 16 and c % 16 == 0 for c in cfg.data.crop), "data.crop", "every side must be a multiple of 16")
    need(cfg.data.val_split != "test", "data.val_split", "the test split is never used for model selection")
    need(cfg.model.rep_dim >= 2, "model.rep_dim", "must be >= 2")
    need(cfg.train.pretrain_iters >= 0, "train.pretrain_iters", "must be >= 0")
    need(cfg.train.finetune_iters >= 0, "train.finetune_iters", "must be >= 0")
    need(cfg.train.batch_labelled >= 1, "train.batch_labelled", "must be >= 1")
    need(cfg.train.batch_unlabelled >= 0, "train.batch_unlabelled", "must be >= 0")
    need(cfg.train.lr > 0, "train.lr", "must be > 0")
    need(0.0 <= cfg.train.ema_momentum <= 1.0, "train.ema_momentum", "must be in [0, 1]")
    need(cfg.total_iters >= 1, "train.finetune_iters", "the run has no iterations (both phases off or zero)")
    need(
        not cfg.method.uses_unlabelled or cfg.train.batch_unlabelled >= 1,
        "train.batch_unlabelled",
        f"method {cfg.method.name!r} uses unlabelled images, so it must be >= 1",
    )
    need(cfg.method.teacher or not cfg.method.uses_teacher, "method.teacher", "the selected terms need the EMA teacher")
    need(0.0 < cfg.temperature.tau_min <= cfg.temperature.tau_max, "temperature.tau_min", "must be in (0, tau_max]")
    need(cfg.temperature.fixed_tau > 0, "temperature.fixed_tau", "must be > 0")
    need(
        cfg.saacl.tau_min is None or 0.0 < cfg.saacl.tau_min <= cfg.temperature.tau_max,
        "saacl.tau_min",
        "must be in (0, temperature.tau_max] or null",
    )
    need(cfg.saacl.fixed_tau is None or cfg.saacl.fixed_tau > 0, "saacl.fixed_tau", "must be > 0 or null")
    need(
        cfg.saacl.tau_min is None or cfg.saacl.fixed_tau is None,
        "saacl.tau_min",
        f"has no effect while saacl.fixed_tau={cfg.saacl.fixed_tau} fixes SAACL's temperature; set one of the two",
    )
    need(
        cfg.pretrain.tau_max >= max(cfg.pretrain.tau_s, cfg.pretrain.tau_t),
        "pretrain.tau_max",
        "must be >= pretrain.tau_s and pretrain.tau_t",
    )
    need(cfg.pretrain.tau_s > 0 and cfg.pretrain.tau_t > 0, "pretrain.tau_s", "tau_s and tau_t must be > 0")
    need(cfg.pretrain.period is None or cfg.pretrain.period > 0, "pretrain.period", "must be > 0 or null")
    need(cfg.temperature.period is None or cfg.temperature.period > 0, "temperature.period", "must be > 0 or null")
    need(
        cfg.temperature.epoch_iters is None or cfg.temperature.epoch_iters >= 1,
        "temperature.epoch_iters",
        "must be >= 1 or null",
    )
    if cfg.temperature.kind == "step":
        need(
            len(cfg.temperature.step_values) == len(cfg.temperature.step_milestones) + 1,
            "temperature.step_values",
            "a step schedule needs len(step_milestones) + 1 values",
        )
    need(cfg.saacl.queue_size >= 0, "saacl.queue_size", "must be >= 0")
    need(cfg.saacl.anchors_per_class >= 1, "saacl.anchors_per_class", "must be >= 1")
    need(cfg.anco.queries_per_class >= 1, "anco.queries_per_class", "must be >= 1")
    need(cfg.anco.negatives >= 1, "anco.negatives", "must be >= 1")
    need(cfg.pretrain.memory_bank >= 1, "pretrain.memory_bank", "must be >= 1")
    if cfg.model.arch == "unet2d":
        need(cfg.pretrain.patch <= cfg.data.size, "pretrain.patch", f"must fit in data.size={cfg.data.size}")
    need(cfg.pretrain.stride >= 1, "pretrain.stride", "must be >= 1")
    need(cfg.runtime.log_every >= 1, "runtime.log_every", "must be >= 1")
    need(cfg.runtime.checkpoint_every >= 0, "runtime.checkpoint_every", "must be >= 0 (0 = only at phase ends)")
    need(cfg.eval.every >= 0, "eval.every", "must be >= 0")
    dev = cfg.runtime.device
    need(
        dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
        "runtime.device",
        "must be auto, cpu, cuda or cuda:N",
    )


# --------------------------------------------------------------------------- public API


def config_from_dict(raw: Mapping[str, Any], expand_method: bool = True, source: str = "config") -> Config:
    """Validate a nested dict into a :class:`Config`.

    With ``expand_method`` the ``method.name`` preset fills every ``method.*``
    switch missing from ``raw``; otherwise missing switches take the dataclass defaults.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (sections: {', '.join(_SECTIONS)})")
    data: dict[str, Any] = copy.deepcopy(dict(raw))
    raw = data
    if expand_method:
        method = dict(raw.get("method") or {})
        name = method.get("name", MethodConfig.name)
        if not isinstance(name, str) or name not in METHOD_PRESETS:
            raise ConfigError(f"method.name: unknown method {name!r}; known: {', '.join(METHOD_PRESETS)}")
        data["method"] = {**METHOD_PRESETS[name], **method}
    sections = {name: _build_section(cls, raw.get(name), name) for name, cls in _SECTIONS.items()}
    cfg = Config(**sections)
    _check_values(cfg)
    _check_ranges(cfg)
    return cfg


def stored_config(raw: Mapping[str, Any], source: str = "stored config") -> Config:
    """A config a run stored (``config.yaml``, a checkpoint's ``config``), as that run trained.

    A key added after the run was written (:data:`HASH_OMITTED_WHEN`) takes the value that reproduces
    the behaviour of its time, not today's default (a run from before ``runtime.channels_last`` ran in
    the contiguous format); method switches are not re-expanded from the preset.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping, got {type(raw).__name__}")
    data: dict[str, Any] = copy.deepcopy(dict(raw))
    for key, legacy in HASH_OMITTED_WHEN.items():
        section, name = key.split(".")
        if isinstance(data.get(section), dict) and name not in data[section]:
            data[section][name] = legacy
    return config_from_dict(data, expand_method=False, source=source)


def load_config(
    path_or_name: str | Path | Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any] | None = None
) -> Config:
    """Load a profile (bundled name, YAML path, or an already-parsed dict) and apply ``--set`` overrides.

    Raises :class:`ConfigError` naming the key for an unknown key, a wrong type or
    an out-of-range value, and naming the file for a missing or malformed profile.
    """
    if isinstance(path_or_name, Mapping):
        raw: dict[str, Any] = copy.deepcopy(dict(path_or_name))
        source = "config"
    else:
        raw = _read_profile(path_or_name)
        source = str(profile_path(path_or_name))
    for key, value in _override_pairs(overrides):
        _set_dotted(raw, key, value, source="override")
    try:
        return config_from_dict(raw, expand_method=True, source=source)
    except ConfigError as exc:
        if source != "config" and source not in str(exc):
            raise ConfigError(f"{exc} [in {source}]") from None
        raise


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _hashed_dict(cfg: Config | Mapping[str, Any]) -> dict[str, Any]:
    d = cfg.to_dict() if isinstance(cfg, Config) else _plain(copy.deepcopy(dict(cfg)))
    for key in HASH_EXCLUDED_KEYS:
        section, name = key.split(".")
        if isinstance(d.get(section), dict):
            d[section].pop(name, None)
    for key, legacy in HASH_OMITTED_WHEN.items():
        section, name = key.split(".")
        if isinstance(d.get(section), dict) and d[section].get(name, legacy) == legacy:
            d[section].pop(name, None)
    return d


def config_hash(cfg: Config | Mapping[str, Any]) -> str:
    """Stable 16-hex-digit SHA-256 digest of the result-relevant settings (see :data:`HASH_EXCLUDED_KEYS`)."""
    blob = json.dumps(_hashed_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def diff_dicts(a: Mapping[str, Any], b: Mapping[str, Any], hashed_only: bool = True) -> list[str]:
    """Dotted keys whose values differ between two config dicts (``"train.lr: 0.01 != 0.02"``)."""
    da, db = (_hashed_dict(a), _hashed_dict(b)) if hashed_only else (_plain(dict(a)), _plain(dict(b)))
    out = []
    for section in sorted(set(da) | set(db)):
        sa, sb = da.get(section, {}) or {}, db.get(section, {}) or {}
        for name in sorted(set(sa) | set(sb)):
            va, vb = sa.get(name, "<missing>"), sb.get(name, "<missing>")
            if va != vb:
                out.append(f"{section}.{name}: {va!r} != {vb!r}")
    return out


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what a run directory stores as ``config.yaml``)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
