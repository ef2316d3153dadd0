"""The options of a distillation run, checked in full before anything touches the disk, and
the named recipes (--recipe) that set several of them at once.

Values may come from the command line (already typed by argparse), from a JSON/YAML config
file (typed by whoever wrote it) or from Python; `DistillConfig.validate` checks each against
its declared type first (a bool is a bool: the string "false" is refused, not read as true),
then its range. Integer options have upper limits so that a typo such as --ipc 1000000000
is an error message, not an attempt to allocate terabytes.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

import torch

from .. import _checks
from ..frequencies import check_structure
from ..functional import ALPHA_RULES
from ..kernels import SPECTRAL_KERNELS, DrawArguments
from . import hardware
from .data import DATASETS
from .errors import ConfigError
from .imagesize import image_size_pair
from .methods import METHODS

# The dataset and method a run records when its data or its loss module came from Python
# (distill/api.py): neither can be reloaded from config.json, so evaluate and resume take them again.
PYTHON = "python"

# (lowest, highest) accepted value of each integer option.
INT_LIMITS = {
    "ipc": (1, 10_000),
    "iterations": (0, 10**9),
    "seed": (0, 2**32 - 1),
    "num_eval": (0, 1_000),  # 0: no evaluation; `evaluate` takes 1 to the same bound (evaluation.py)
    "num_freqs": (1, 2**20),
    "width": (1, 4096),
    "net_pool": (0, 1_000),
    "pool_epochs": (0, 100_000),
    "batch_real": (1, 2**20),
    "eval_epochs": (1, 1_000_000),  # 0 would fail only at the end, after the whole distillation
    "checkpoint_every": (1, 10**9),
    "factor": (1, 8),
}
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("none", "plateau")
EVAL_OPTIMIZERS = ("sgd", "adamw")
# What fills the tiles of a class that has fewer real images than IPC x factor^2 (see
# loop.initial_synthetic): Gaussian noise, or the class's real images again, each further pass
# under one draw of the augmentation's geometric part (an exact copy would receive exactly the
# original's gradient at every step and never become a different image).
INIT_FILLS = ("noise", "repeat")
# Evaluation learning-rate steps: (fractions of the epochs, factor at each).
EVAL_SCHEDULES = {"half": ((0.5,), 0.1), "steps": ((0.2, 0.4, 0.6, 0.8), 0.5)}

# Named recipes: option values a preset sets unless the user gives them (flags and config files
# win). "thin" is the plain loop (the defaults); "ncfm" the ingredients of the published NCFM
# code (github.com/gszfwsb/NCFM) that cost no method accuracy in the ablation
# (benchmarks/bench_recipe.py, docs/distillation.md), scaled to a CPU: a pool of trained
# networks interpolated towards their initialisation, multi-formation, AdamW with weight decay,
# pixels clamped to the valid range. Left out, their options kept for runs where they may pay:
# the published lr 1e-3 with reduce-on-plateau (tuned for 20000 steps; at the few hundred a CPU
# affords it left the images where they started: -8.4 points for dm and ncfm), the calibration
# term at weight 1 (its cross-entropy, ~1, outweighs NCFD, ~0.1, whose value then rises during
# the run: -7.5 points for ncfm; +1.1 +- 3.1 for dm) and the papers' evaluation (AdamW, a step
# schedule, CutMix: -3.9 points for dm with 100 evaluation epochs).
RECIPES = {
    "thin": {},
    "ncfm": dict(
        net_pool=5,
        pool_epochs=60,
        pool_interpolate=True,
        factor=2,
        optimizer="adamw",
        weight_decay=5e-4,
        clamp_pixels=True,
    ),
}


# Options renamed to the library's names of the same concepts (old name -> new), read under
# their old names until the next release: a config.json of an earlier version's run, a --config
# file, a checkpoint's record (first_difference), and on the command line (cli.py, with a warning).
RENAMED = {"frequencies": "structure", "head_rule": "alpha_rule"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def current_names(values):
    """A copy of `values` (option names to values) with each old name of RENAMED replaced by the
    new one; anything that is not a dict is returned as it is. ConfigError if an option is given
    under both its names."""
    if not isinstance(values, dict):
        return values
    values = dict(values)
    for old, new in RENAMED.items():
        if old in values:
            if new in values:
                raise ConfigError(f"{old} is the old name of {new}: give the option once, as {new}")
            values[new] = values.pop(old)
    return values


class _Preset:
    """The default of an option a recipe sets: the recipe's value where it has one, else `plain`
    (the thin loop's), filled in by DistillConfig.__post_init__ however the config is built."""

    def __init__(self, plain):
        self.plain = plain

    def __repr__(self) -> str:
        return f"<the recipe's value, else {self.plain!r}>"


def _preset(plain) -> typing.Any:
    return _Preset(plain)


def _library_check(option: str, check) -> None:
    """Run one of the library's own argument checks (the library's limits stay in one place); its
    message names the argument and the value, and the ConfigError starts with the flag."""
    try:
        check()
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{option}: {error}") from None


@dataclass
class DistillConfig:
    dataset: str = "digits"
    method: str = "dm"
    ipc: int = 10
    iterations: int = 200
    seed: int = 0
    out: str = "runs/run"
    device: str = "cpu"
    num_eval: int = 3
    imbalance: float | None = None
    data_root: str | None = None
    # [height, width] every image is resized to; None: the data's own size. An int or [side] (a
    # square) is accepted and stored as [side, side].
    image_size: list[int] | None = None
    kernel: str = "gaussian"
    bandwidth: float | None = None  # None: median distance of the real features at each step
    num_freqs: int = 1024
    alpha_head: float = 0.8
    alpha_rule: str = "binary"  # csdm's head/tail rule: the library's alpha_rule (ALPHA_RULES)
    learned_sampler: bool = False
    width: int = 128
    net_pool: int = _preset(0)  # 0: a freshly random ConvNet each step; K: draw from K briefly trained ones
    pool_epochs: int = _preset(2)  # training epochs of each pooled network on the real training set
    batch_real: int = 64  # real images per class per step
    lr: float = 0.01  # the optimiser of the synthetic images (and the NCFM sampler)
    eval_epochs: int = 300
    checkpoint_every: int = 50
    quiet: bool = False
    recipe: str = "thin"  # the preset (RECIPES) that fills every option left unset whose default is _preset(...)
    pool_interpolate: bool = _preset(False)  # match lambda * init + (1 - lambda) * trained, lambda ~ U(0, 1) a step
    factor: int = _preset(1)  # multi-formation: each stored image holds factor x factor images
    calib_weight: float = 0.0  # weight of the calibration term (cross-entropy of the trained network)
    optimizer: str = _preset("adam")  # adam | adamw, on the synthetic images
    weight_decay: float = _preset(0.0)
    lr_schedule: str = "none"  # none | plateau (x0.5 after iterations / 40 steps without improvement)
    clamp_pixels: bool = _preset(False)  # keep pixels in the valid range after every step
    eval_optimizer: str = "sgd"  # sgd | adamw, for the evaluation networks
    eval_schedule: str = "half"  # EVAL_SCHEDULES
    eval_cutmix: float = 0.0  # CutMix probability in evaluation (and in training the pool)
    structure: str = "iid"  # iid | orthogonal | hadamard: how ncfm/sdd/csdm draw frequencies (SPEC §4)
    init_fill: str = "noise"  # INIT_FILLS: tiles of a class with fewer real images than IPC x factor^2
    amp: str = "off"  # off | bf16 | fp16: autocast of the ConvNet in every phase (distill/hardware.py)
    compile: bool = False  # torch.compile of the ConvNet in every phase
    # Given from Python (distill/api.py): a hash of the data (dataset "python"; --resume refuses
    # other data), the network factory's name ("python:<module.name>"), the loss module's
    # class and configuration (method "python").
    data_fingerprint: str | None = None
    network: str = "convnet"
    loss: str | None = None

    # Options that may change between an interrupted run and its resumption (`out`: the run
    # directory may have been moved or be named by another path).
    # --compile changes how, not what, the network computes.
    RESUMABLE_CHANGES = ("num_eval", "eval_epochs", "quiet", "device", "checkpoint_every", "out", "compile")

    def __post_init__(self) -> None:
        # The recipe applies however the config is built (constructor, from_dict, the CLI):
        # options given explicitly win over it, the others take its values.
        preset = RECIPES.get(self.recipe, {}) if isinstance(self.recipe, str) else {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, _Preset):
                setattr(self, field.name, preset.get(field.name, value.plain))

    def validate(self, *, check_device: bool = True) -> DistillConfig:
        """Check every option's type, then its range; returns self. Raises ConfigError.
        check_device=False accepts a CUDA device that is not present (a stored config read
        back on another machine, for evaluation on the CPU)."""
        for field, hint in typing.get_type_hints(type(self)).items():
            if field in {f.name for f in dataclasses.fields(self)} and field != "image_size":  # (below)
                setattr(self, field, _typed(field, getattr(self, field), hint))

        def check(ok: bool, message: str):
            if not ok:
                raise ConfigError(message)

        python_data = self.dataset == PYTHON and self.data_fingerprint is not None
        check(
            self.dataset in DATASETS or python_data,
            f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}",
        )
        check(
            self.method in METHODS or (self.method == PYTHON and self.loss is not None),
            f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}",
        )
        check(
            self.kernel in SPECTRAL_KERNELS,
            f"unknown kernel {self.kernel!r}; choose one of {', '.join(SPECTRAL_KERNELS)}",
        )
        _library_check(flag("alpha_rule"), lambda: _checks.choice("alpha_rule", self.alpha_rule, ALPHA_RULES))
        for name, allowed in (
            ("recipe", tuple(RECIPES)),
            ("optimizer", OPTIMIZERS),
            ("lr_schedule", LR_SCHEDULES),
            ("eval_optimizer", EVAL_OPTIMIZERS),
            ("eval_schedule", tuple(EVAL_SCHEDULES)),
            ("init_fill", INIT_FILLS),
        ):
            check(
                getattr(self, name) in allowed,
                f"{flag(name)} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}",
            )
        for name, (low, high) in INT_LIMITS.items():
            value = getattr(self, name)
            check(low <= value <= high, f"{flag(name)} must be an integer in [{low}, {high}], got {value}")
        try:  # a list, so that a config read back from JSON compares equal to the one written
            size = image_size_pair(self.image_size)
            self.image_size = None if size is None else list(size)
            if size is not None:  # here, before any data is read; the data's own size once it is
                from . import formation

                formation.check_factor(self.factor, size)
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from None
        check(
            self.imbalance is None or (math.isfinite(self.imbalance) and self.imbalance >= 1),
            f"--imbalance must be a finite number >= 1 (n_max / n_min), got {self.imbalance}",
        )
        # ncfm draws Gaussian frequencies whatever --kernel says (distill/methods.py).
        drawn = "gaussian" if self.method == "ncfm" else self.kernel
        if self.bandwidth is not None:  # the library's check of a draw in float32 (the losses' dtype), now
            draw = dict(bandwidth=self.bandwidth, nu=1.5, generator=None, dtype=torch.float32)
            _library_check(flag("bandwidth"), lambda: DrawArguments.check(drawn, self.num_freqs, 1, **draw))
        check(0.0 <= self.alpha_head <= 1.0, f"--alpha-head must lie in [0, 1], got {self.alpha_head}")
        check(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a finite number > 0, got {self.lr}")
        for name in ("calib_weight", "weight_decay"):
            value = getattr(self, name)
            check(math.isfinite(value) and value >= 0, f"{flag(name)} must be a finite number >= 0, got {value}")
        check(0.0 <= self.eval_cutmix <= 1.0, f"--eval-cutmix is a probability in [0, 1], got {self.eval_cutmix}")
        _library_check(flag("structure"), lambda: check_structure(self.structure, drawn))
        check(
            self.structure == "iid" or not (self.method == "ncfm" and self.learned_sampler),
            "--structure applies to drawn frequencies; the learned sampler makes its own",
        )
        if self.net_pool == 0:
            check(
                self.calib_weight == 0,
                f"--calib-weight {self.calib_weight} needs trained networks: set --net-pool >= 1",
            )
            check(not self.pool_interpolate, "--pool-interpolate needs trained networks: set --net-pool >= 1")
        check(self.out != "" and "\0" not in self.out, f"--out must name a directory, got {self.out!r}")
        check(
            self.data_root is None or (self.data_root != "" and "\0" not in self.data_root),
            f"--data-root must name a folder, got {self.data_root!r}",
        )
        check(self.amp in hardware.AMP, f"--amp must be one of {', '.join(hardware.AMP)}, got {self.amp!r}")
        problem = hardware.device_problem(self.device, present=check_device)
        check(problem is None, problem)
        if check_device:
            problem = hardware.amp_problem(torch.device(self.device), self.amp)
            check(problem is None, problem)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DistillConfig:
        """A config from option names to values (dashes or underscores; the old names of RENAMED
        read as the new), on top of the values of its recipe (values["recipe"], default "thin",
        applied as by the constructor); types and ranges are checked by validate()."""
        if not isinstance(values, dict):
            raise ConfigError(f"options must be a mapping of names to values, got {type(values).__name__}")
        values = current_names({str(k).replace("-", "_"): v for k, v in values.items()})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}")
        return cls(**values)  # __post_init__ fills the options not given from the recipe


# Before --image-size, image folders were always resized to 32 x 32 (every other dataset kept its
# own size, what image_size None means now): a stored run's options without it mean that.
LEGACY_IMAGE_FOLDER_SIZE = [32, 32]


def stored_options(values: dict) -> dict:
    """The options a run folder's file (config.json, a checkpoint, synthetic.pt) recorded, with
    image_size filled in for a run written before the option existed."""
    if isinstance(values, dict) and "image_size" not in values and values.get("dataset") in DATASETS:
        if values["dataset"].removesuffix("-lt") == "imagefolder":
            return {**values, "image_size": list(LEGACY_IMAGE_FOLDER_SIZE)}
    return values


def first_difference(recorded: dict, current: dict, *, ignore=()) -> tuple[str, object, object] | None:
    """The first option (in `current`'s order, then any only `recorded` has) whose value differs
    between the options a file recorded (under today's names or the old ones of RENAMED) and the
    current ones, as (name, recorded, current); None if they agree on every option not in `ignore`."""
    recorded = current_names(recorded)
    missing = object()
    for name in [*current, *(k for k in recorded if k not in current)]:
        if name not in ignore and recorded.get(name, missing) != current.get(name, missing):
            return name, recorded.get(name, "(none)"), current.get(name, "(none)")
    return None


def _typed(name: str, value, hint):
    """value if it has the declared type (ints accepted for floats, as floats), else ConfigError."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None))
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{flag(name)} must be {_KIND[base]}, got null/None")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[base]
    if not ok:
        raise ConfigError(
            f"{flag(name)} must be {_KIND[base]}{' or null' if optional else ''}, "
            f"got {value!r} (a {type(value).__name__})"
        )
    if base is float:
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{flag(name)} is too large for a float: {value}") from None
    return value


_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
