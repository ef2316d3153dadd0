"""`spectral-distill`: distil a dataset into a few synthetic images per class, evaluate, show.

    spectral-distill distill --dataset digits-lt --method csdm --ipc 10 --out runs/csdm
    spectral-distill evaluate runs/csdm --num-eval 5
    spectral-distill show runs/csdm

Options can also come from --config FILE (JSON, or YAML when PyYAML is installed); flags given
on the command line win. Every failure (a bad option, a damaged file, a run directory in use
or not a run) is one line on stderr and exit status 2; an interrupted run exits with 130 and
keeps its last checkpoint for --resume.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import __version__
from .distill import api
from .distill.config import (
    EVAL_OPTIMIZERS,
    EVAL_SCHEDULES,
    INIT_FILLS,
    INT_LIMITS,
    LR_SCHEDULES,
    OPTIMIZERS,
    RECIPES,
    RENAMED,
    ConfigError,
    DistillConfig,
    current_names,
    flag,
)
from .distill.data import DATASETS, DataError
from .distill.files import RunFileError, iter_metrics, read_json, read_text
from .distill.hardware import AMP
from .distill.loop import Supplied, check_config
from .distill.methods import METHODS
from .distill.needs import check_installed
from .distill.rundir import saved_config
from .frequencies import STRUCTURES
from .functional import ALPHA_RULES
from .kernels import SPECTRAL_KERNELS

PROG = "spectral-distill"


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage block before its error; ours is one line, like every other."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# What a command used under the names of before (RENAMED): main prints each as a warning once the
# command succeeds, or adds them to its one error line if it fails (every failure is one line).
_OLD_NAMES_USED: list[str] = []


def _old_name(old: str, new: str) -> str:
    note = f"{old} is the old name of {new} and goes in the next release: use {new}"
    _OLD_NAMES_USED.append(note)
    return note


class _OldFlag(argparse.Action):
    """An option's flag of before (kept one release, not in --help): sets the option as its new
    flag does, and is noted."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        _old_name(option_string, self.new)
        setattr(namespace, self.dest, values)


def _choices(names) -> str:
    """The allowed values as argparse shows its choices ({a,b,c}), given as the metavar: the
    values themselves are checked by DistillConfig.validate (see below)."""
    return "{" + ",".join(names) + "}"


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("distill", help="distil a dataset", argument_default=argparse.SUPPRESS)
    # The options in the groups --help lists them by; a default is written into each help text
    # once, by hand (no ArgumentDefaultsHelpFormatter: with argument_default=SUPPRESS it has
    # nothing to print, and texts that explain a None default would say "default" twice).
    group = {
        name: d.add_argument_group(name, text)
        for name, text in (
            ("data", "the real dataset"),
            ("method", "what the synthetic images match, and how"),
            ("recipe", "a preset (--recipe) and the ingredients it sets"),
            ("optimisation", "the optimiser of the synthetic images"),
            ("evaluation", "networks trained on the synthetic set, tested on the real test set"),
            ("run", "where and how the run computes and what it writes and prints"),
        )
    }
    defaults = DistillConfig()
    # Names are checked by DistillConfig.validate, not argparse choices, so a bad one gets a
    # one-line message and exit status 2 like every other bad option (and a config file's value
    # the same check); the metavar shows the allowed values.
    group["data"].add_argument(
        "--dataset", metavar=_choices(DATASETS), help=f"the real dataset (default {defaults.dataset})"
    )
    group["data"].add_argument(
        "--image-size",
        type=int,
        nargs="+",
        metavar=("H", "W"),
        help="height and width every image is resized to (one value: a square; default: the data's own size, "
        "which the images of a folder must then share)",
    )
    group["method"].add_argument(
        "--method",
        metavar=_choices(METHODS),
        help="the matching loss (ncfm, the NCFM method, matches with the library's ncfd loss; "
        f"default {defaults.method})",
    )
    for where, name, kind, text in [
        ("method", "ipc", int, "synthetic images per class"),
        ("optimisation", "iterations", int, "optimisation steps"),
        ("run", "seed", int, "seed of every random draw"),
        ("run", "out", str, "run directory"),
        ("run", "device", str, "a torch device: cpu, cuda, cuda:N, mps, ... (every phase runs there)"),
        ("evaluation", "num-eval", int, "evaluation seeds (0: no evaluation; evaluate takes 1 up to the same bound)"),
        ("data", "imbalance", float, "n_max / n_min of the long-tailed training set (default 10, -lt datasets only)"),
        ("data", "data-root", str, "folder holding cifar/imagefolder data (never downloaded; no default)"),
        ("method", "bandwidth", float, "kernel bandwidth (default: the median feature distance of each step)"),
        ("method", "num-freqs", int, "frequencies per step for ncfm/sdd/csdm"),
        ("method", "alpha-head", float, "CSDM amplitude weight of head classes"),
        ("method", "width", int, "ConvNet width"),
        ("recipe", "net-pool", int, "draw each step's network from this many briefly trained ones (0: fresh random)"),
        ("recipe", "pool-epochs", int, "training epochs of each pooled network"),
        ("optimisation", "batch-real", int, "real images per class per step"),
        (
            "optimisation",
            "lr",
            float,
            "learning rate of the synthetic images' optimiser (--optimizer: adam or adamw) and of the ncfm sampler",
        ),
        ("evaluation", "eval-epochs", int, "training epochs per evaluation"),
        ("run", "checkpoint-every", int, "iterations between checkpoints"),
        ("recipe", "factor", int, "multi-formation: each stored image holds factor x factor images"),
        (
            "recipe",
            "calib-weight",
            float,
            "weight of the calibration term (cross-entropy of the pool's trained network)",
        ),
        ("recipe", "weight-decay", float, "weight decay of the synthetic images' optimiser"),
        ("evaluation", "eval-cutmix", float, "CutMix probability when training evaluation (and pool) networks"),
    ]:
        default = getattr(defaults, name.replace("-", "_"))
        limits = INT_LIMITS.get(name.replace("-", "_"))
        bounds = f", {limits[0]}..{limits[1]}" if limits else ""
        said = f" (default {default}{bounds})" if default is not None else ""  # a None default: the text says it
        group[where].add_argument(f"--{name}", type=kind, help=f"{text}{said}")
    group["recipe"].add_argument(
        "--recipe",
        metavar=_choices(RECIPES),
        help=f"preset of the options of this group (default {defaults.recipe}); options given explicitly win over it",
    )
    for where, name, allowed, text in (
        ("optimisation", "optimizer", OPTIMIZERS, "optimiser of the synthetic images"),
        (
            "optimisation",
            "lr-schedule",
            LR_SCHEDULES,
            "plateau: the rate x0.5 after iterations / 40 steps without gain",
        ),
        ("evaluation", "eval-optimizer", EVAL_OPTIMIZERS, "sgd (lr 0.01, momentum 0.9) or adamw (lr 1e-3)"),
        (
            "evaluation",
            "eval-schedule",
            tuple(EVAL_SCHEDULES),
            "half: x0.1 at half the epochs; steps: x0.5 at each fifth",
        ),
    ):
        group[where].add_argument(
            f"--{name}", metavar=_choices(allowed), help=f"{text} (default {getattr(defaults, name.replace('-', '_'))})"
        )
    group["recipe"].add_argument(
        "--pool-interpolate",
        action=argparse.BooleanOptionalAction,
        help="match features of lambda * init + (1 - lambda) * trained pool weights, lambda ~ U(0, 1) per step",
    )
    group["recipe"].add_argument(
        "--clamp-pixels", action=argparse.BooleanOptionalAction, help="keep the synthetic pixels in the valid range"
    )
    group["recipe"].add_argument(
        "--init-fill",
        metavar=_choices(INIT_FILLS),
        help="tiles of a class with fewer real images than ipc x factor^2 "
        f"(repeat: its real images again, each copy augmented; default {defaults.init_fill})",
    )
    group["method"].add_argument(
        "--kernel", metavar=_choices(SPECTRAL_KERNELS), help=f"the spectral kernel (default {defaults.kernel})"
    )
    group["method"].add_argument(
        "--structure",
        metavar=_choices(STRUCTURES),
        help="how ncfm/sdd/csdm draw frequencies, the library's structure "
        f"(orthogonal and hadamard: radial kernels only; was --frequencies; default {defaults.structure})",
    )
    group["method"].add_argument(
        "--alpha-rule",
        metavar=_choices(ALPHA_RULES),
        help=f"CSDM head/tail rule, the library's alpha_rule (was --head-rule; default {defaults.alpha_rule})",
    )
    for old, new in RENAMED.items():
        group["method"].add_argument(flag(old), dest=new, action=_OldFlag, new=flag(new), help=argparse.SUPPRESS)
    group["run"].add_argument(
        "--amp",
        metavar=_choices(AMP),
        help=f"autocast of the ConvNet in every phase (bf16, fp16: a GPU's); the loss stays float32 "
        f"(default {defaults.amp})",
    )
    group["run"].add_argument(
        "--compile", action=argparse.BooleanOptionalAction, help="torch.compile the ConvNet (fullgraph) in every phase"
    )
    group["method"].add_argument(
        "--learned-sampler", action="store_true", help="ncfm: train the frequency sampler as a true min-max"
    )
    group["run"].add_argument(
        "--quiet", action="store_true", help="no progress bars or phase summaries; the result line stays"
    )
    # No default=False: absent unless given, so vars(args) stays the options of a DistillConfig (and this flag).
    group["run"].add_argument(
        "--verbose", action="store_true", help="also print the run's config and metrics (as show does)"
    )
    group["run"].add_argument(
        "--resume", action="store_true", default=False, help="continue an interrupted run in --out"
    )
    group["run"].add_argument(
        "--overwrite", action="store_true", default=False, help="replace an existing run in --out"
    )
    group["run"].add_argument("--config", type=Path, default=None, help="JSON or YAML file of the same options")
    e = sub.add_parser("evaluate", help="evaluate a run's synthetic set")
    e.add_argument("run", type=Path)
    e.add_argument(
        "--num-eval", type=int, default=3, help=f"evaluation seeds (default 3, 1..{INT_LIMITS['num_eval'][1]})"
    )
    e.add_argument(
        "--eval-epochs",
        type=int,
        default=None,
        help=f"training epochs per evaluation (default: the run's, 1..{INT_LIMITS['eval_epochs'][1]})",
    )
    e.add_argument("--device", default=None, help="where the networks train (default: the run's --device)")
    e.add_argument("--amp", metavar=_choices(AMP), default=None, help="autocast (default: the run's --amp)")
    e.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="(default: the run's --compile)"
    )
    e.add_argument("--quiet", action="store_true", help="no progress bar or summary; the result line stays")
    s = sub.add_parser("show", help="print a run's config, metrics and image grid path")
    s.add_argument("run", type=Path)
    return parser


def _read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"--config {path} does not exist or is not a file")
    try:
        text = read_text(path, "configuration file")  # a regular file of sane size, UTF-8
    except RunFileError as error:
        raise ConfigError(f"--config {error}") from None
    if path.suffix in (".yaml", ".yml"):
        values = _parse_yaml(text, path)
    else:
        try:
            values = json.loads(text)
        except (ValueError, RecursionError) as error:  # malformed, a 5000-digit integer, deep nesting
            raise ConfigError(f"--config {path}: not valid JSON ({str(error)[:160] or type(error).__name__})") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} must hold a mapping of option names to values, got {type(values).__name__}")
    reserved = sorted({str(k).replace("-", "_") for k in values} & {"resume", "overwrite", "config"})
    if reserved:
        raise ConfigError(f"--config {path}: {', '.join(reserved)} can only be given on the command line")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def _parse_yaml(text: str, path: Path):
    """yaml.safe_load without aliases: a configuration file has no use for them, and nested
    aliases let a few hundred bytes expand to gigabytes."""
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            "--config: a YAML file needs PyYAML: pip install 'spectral_kernels[yaml]' (or pyyaml); or use JSON"
        ) from None

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise ConfigError(f"--config {path}: YAML aliases (*{self.peek_event().anchor}) are not accepted")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliases)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{at} ({getattr(error, 'problem', None) or error})") from None
    except (ValueError, RecursionError) as error:
        raise ConfigError(
            f"--config {path}: not a usable YAML file ({str(error)[:160] or type(error).__name__})"
        ) from None


def _show(run: Path) -> None:
    config = saved_config(run)  # RunFileError (one line) for a missing or damaged config.json
    last, phases, evaluations = None, [], []  # the log is streamed: it may hold 10^9 rows
    for row in iter_metrics(run / "metrics.jsonl"):
        if "iteration" in row:
            last = row
        if row.get("event") == "phase":
            phases.append(row)
        if row.get("event") == "eval":
            evaluations.append(row)
    print(f"run: {run}")
    print("config:")
    for key, value in config.to_dict().items():
        print(f"  {key}: {value}")
    if last is not None:
        print(f"iterations run: {last['iteration'] + 1}, last loss {last['loss']:.6g}, {last['seconds']:.1f} s")
    for r in phases:
        where = f"loaded from the {r['loaded']}" if "loaded" in r else f"on {r.get('device')}, amp {r.get('amp')}"
        print(f"{r.get('phase')}: {where}{', compiled' if r.get('compile') else ''}")
    for r in evaluations:
        print(f"evaluation: {_accuracy_text(r)} ({r['epochs']} epochs)")
        if r.get("per_class_accuracy"):
            print("  per class: " + " ".join("-" if a is None else f"{100 * a:.1f}" for a in r["per_class_accuracy"]))
        for group in ("many", "medium", "few"):
            if f"{group}_shot_accuracy" in r:
                value = r[f"{group}_shot_accuracy"]
                print(
                    f"  {group}-shot ({r['shot_thresholds'][group]} training images): "
                    f"{'no class' if value is None else f'{100 * value:.2f} %'}"
                )
    environment = run / "environment.json"
    if environment.is_file():
        env = read_json(environment, "run environment")
        print(
            f"environment: spectral_kernels {env.get('spectral_kernels')}, torch {env.get('torch')}, triton "
            f"{env.get('triton')}, CUDA {env.get('cuda')}, CPU kernels {env.get('cpu_kernels')}, device "
            f"{env.get('device')} ({env.get('device_name')})"
        )
    grid = run / "grid.png"
    print(f"image grid: {grid if grid.exists() else 'not written yet'}")


def _accuracy_text(r: dict) -> str:
    """Test accuracy (%) over the evaluation seeds: the mean, the sample std (n - 1) and the 95%
    t-interval of the mean (eval.json); a run evaluated before these were recorded gives a std only."""
    text = f"{100 * r['accuracy_mean']:.2f} % mean over {r['num_eval']} seed{'s' if r['num_eval'] != 1 else ''}"
    if r.get("accuracy_ci95"):
        low, high = (100 * v for v in r["accuracy_ci95"])
        return f"{text}, sample std {100 * r['accuracy_std']:.2f}, 95% interval [{low:.2f}, {high:.2f}]"
    if "accuracy_ci95" not in r and r.get("accuracy_std") is not None:  # an older eval row
        return f"{text}, std {100 * r['accuracy_std']:.2f}"
    return text


def _result_line(run: Path, config: DistillConfig) -> str:
    """The last line a distillation prints: where its synthetic set is and, if evaluated, its accuracy."""
    what = f"{run}: {config.method} on {config.dataset}, IPC {config.ipc}"
    evals = [r for r in iter_metrics(run / "metrics.jsonl") if r.get("event") == "eval"] if config.num_eval else []
    if not evals:
        return f"{what}, written to {run / 'synthetic.pt'} (not evaluated: --num-eval 0)"
    r = evals[-1]
    return f"{what}: accuracy {_accuracy_text(r)} ({r['epochs']} epochs)"


def _fail(message: str, status: int = 2) -> int:
    old = f" ({'; '.join(_OLD_NAMES_USED)})" if _OLD_NAMES_USED else ""
    print(f"{PROG}: error: {' '.join(str(message).split())}{old}", file=sys.stderr)  # one line, whatever it holds
    return status


def distill_config(args: argparse.Namespace) -> DistillConfig:
    """The options a parsed `distill` command runs with: its config file, then its flags, then
    the preset they name (flags win). Raises ConfigError."""
    cli_only = ("command", "config", "resume", "overwrite", "verbose")
    given = {k: v for k, v in vars(args).items() if k not in cli_only}
    values = _read_config_file(args.config) if args.config else {}
    for old, new in RENAMED.items():
        if old in values:
            _old_name(f"--config {args.config}: {old}", new)
    values = current_names(values)  # (before the flags: a flag wins over the file's value under either name)
    values.update(given)
    return DistillConfig.from_dict(values)


def api_arguments(config: DistillConfig) -> dict:
    """The keywords of spectral_kernels.distill.distill that run `config` (the CLI is built on
    that function: the same checks, the same run folder)."""
    values = config.to_dict()
    for derived in ("dataset", "data_fingerprint", "network", "loss"):  # the API sets these from its arguments
        values.pop(derived)
    return values


def parse_distill(argv: list[str]) -> DistillConfig:
    """distill_config of a `distill ...` argument list, without running it."""
    return distill_config(_parser().parse_args(argv))


def main(argv=None) -> int:
    _OLD_NAMES_USED.clear()
    args = _parser().parse_args(argv)
    try:
        if args.command == "distill":
            config = distill_config(args)
            check_installed(config.dataset)
            check_config(config, Supplied())  # the options' own one-line errors, before the API's checks
            result = api.distill(config.dataset, **api_arguments(config), resume=args.resume, overwrite=args.overwrite)
            run = None if result is None else result.run
            if run is not None:  # rank 0 (under torchrun the others return None)
                if getattr(args, "verbose", False):
                    _show(run)
                print(_result_line(run, config))  # even with --quiet: what the run produced
        elif args.command == "evaluate":
            from .distill.evaluation import evaluate_run

            # Before any training: evaluation redraws grid.png (Pillow) and reloads the dataset.
            check_installed(saved_config(Path(args.run)).dataset)
            result = evaluate_run(
                args.run,
                num_eval=args.num_eval,
                epochs=args.eval_epochs,
                device=args.device,
                amp=args.amp,
                compile=args.compile,
                quiet=args.quiet,
            )
            print(_accuracy_text(result))
        else:
            _show(args.run)
    except (ConfigError, DataError) as error:
        return _fail(error)
    except OSError as error:  # disk full, permission denied, a folder vanished mid-run
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"{where}{error.strerror or error}")
    except (MemoryError, torch.OutOfMemoryError):
        return _fail("out of memory; lower --ipc, --batch-real, --width or --num-freqs")
    except KeyboardInterrupt:
        return _fail("interrupted; what was saved is kept (continue a distillation with --resume)", status=130)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    for note in _OLD_NAMES_USED:
        print(f"{PROG}: warning: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
