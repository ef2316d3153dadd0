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
import os
import sys
from pathlib import Path

import torch

from .distill.config import (
    EVAL_OPTIMIZERS,
    EVAL_SCHEDULES,
    INIT_FILLS,
    INT_LIMITS,
    LR_SCHEDULES,
    OPTIMIZERS,
    RECIPES,
    ConfigError,
    DistillConfig,
)
from .distill.data import DATASETS, DataError
from .distill.files import RunFileError, iter_metrics, read_text
from .distill.loop import distill
from .distill.methods import HEAD_RULES, METHODS
from .distill.rundir import saved_config
from .kernels import SPECTRAL_KERNELS, STRUCTURES

PROG = "spectral-distill"


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage block before its error; ours is one line, like every other."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("distill", help="distil a dataset", argument_default=argparse.SUPPRESS)
    defaults = DistillConfig()
    # Names are checked by DistillConfig.validate, not argparse choices, so a bad one gets a
    # one-line message and exit status 2 like every other bad option.
    d.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default {defaults.dataset})")
    d.add_argument("--method", help=f"one of {', '.join(METHODS)} (default {defaults.method})")
    for name, kind, text in [
        ("ipc", int, "synthetic images per class"),
        ("iterations", int, "optimisation steps"),
        ("seed", int, "seed of every random draw"),
        ("out", str, "run directory"),
        ("device", str, "cpu or cuda[:N]"),
        ("num-eval", int, "evaluation seeds (0: no evaluation)"),
        ("imbalance", float, "n_max / n_min of the long-tailed training set (-lt datasets: default 10)"),
        ("data-root", str, "folder holding cifar/imagefolder data (never downloaded)"),
        ("bandwidth", float, "kernel bandwidth (default: median feature distance per step)"),
        ("num-freqs", int, "frequencies per step for ncfm/sdd/csdm"),
        ("alpha-head", float, "CSDM amplitude weight of head classes"),
        ("width", int, "ConvNet width"),
        ("net-pool", int, "draw each step's network from this many briefly trained ones (0: fresh random)"),
        ("pool-epochs", int, "training epochs of each pooled network"),
        ("batch-real", int, "real images per class per step"),
        ("lr", float, "Adam learning rate"),
        ("eval-epochs", int, "training epochs per evaluation"),
        ("checkpoint-every", int, "iterations between checkpoints"),
        ("factor", int, "multi-formation: each stored image holds factor x factor images"),
        ("calib-weight", float, "weight of the calibration term (cross-entropy of the pool's trained network)"),
        ("weight-decay", float, "weight decay of the synthetic images' optimiser"),
        ("eval-cutmix", float, "CutMix probability when training evaluation (and pool) networks"),
    ]:
        default = getattr(defaults, name.replace("-", "_"))
        limits = INT_LIMITS.get(name.replace("-", "_"))
        bounds = f", {limits[0]}..{limits[1]}" if limits else ""
        d.add_argument(f"--{name}", type=kind, help=f"{text} (default {default}{bounds})")
    d.add_argument(
        "--recipe",
        help=f"preset of the options below, one of {', '.join(RECIPES)} (default {defaults.recipe}); "
        "options given explicitly win over it",
    )
    for name, allowed in (
        ("optimizer", OPTIMIZERS),
        ("lr-schedule", LR_SCHEDULES),
        ("eval-optimizer", EVAL_OPTIMIZERS),
        ("eval-schedule", tuple(EVAL_SCHEDULES)),
    ):
        d.add_argument(
            f"--{name}", help=f"one of {', '.join(allowed)} (default {getattr(defaults, name.replace('-', '_'))})"
        )
    d.add_argument(
        "--pool-interpolate",
        action=argparse.BooleanOptionalAction,
        help="match features of lambda * init + (1 - lambda) * trained pool weights, lambda ~ U(0, 1) per step",
    )
    d.add_argument(
        "--clamp-pixels", action=argparse.BooleanOptionalAction, help="keep the synthetic pixels in the valid range"
    )
    d.add_argument(
        "--init-fill",
        help=f"tiles of a class with fewer real images than ipc x factor^2: {', '.join(INIT_FILLS)} "
        f"(repeat: its real images again, each copy augmented; default {defaults.init_fill})",
    )
    d.add_argument("--kernel", help=f"one of {', '.join(SPECTRAL_KERNELS)} (default {defaults.kernel})")
    d.add_argument(
        "--frequencies",
        help=f"how ncfm/sdd/csdm draw frequencies: {', '.join(STRUCTURES)} "
        f"(orthogonal and hadamard: radial kernels only; default {defaults.frequencies})",
    )
    d.add_argument(
        "--head-rule", help=f"CSDM head/tail rule, one of {', '.join(HEAD_RULES)} (default {defaults.head_rule})"
    )
    d.add_argument("--learned-sampler", action="store_true", help="ncfm: train the frequency sampler as a true min-max")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.add_argument("--resume", action="store_true", default=False, help="continue an interrupted run in --out")
    d.add_argument("--overwrite", action="store_true", default=False, help="replace an existing run in --out")
    d.add_argument("--config", type=Path, default=None, help="JSON or YAML file of the same options")
    e = sub.add_parser("evaluate", help="evaluate a run's synthetic set")
    e.add_argument("run", type=Path)
    e.add_argument("--num-eval", type=int, default=3, help="evaluation seeds, 1..1000000 (default 3)")
    e.add_argument("--eval-epochs", type=int, default=None, help="training epochs per evaluation (default: the run's)")
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
        raise ConfigError("--config: a YAML file needs PyYAML (pip install pyyaml); or use JSON") from None

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
    last, evaluations = None, []  # the log is streamed: it may hold 10^9 rows
    for row in iter_metrics(run / "metrics.jsonl"):
        if "iteration" in row:
            last = row
        if row.get("event") == "eval":
            evaluations.append(row)
    print(f"run: {run}")
    print("config:")
    for key, value in config.to_dict().items():
        print(f"  {key}: {value}")
    if last is not None:
        print(f"iterations run: {last['iteration'] + 1}, last loss {last['loss']:.6g}, {last['seconds']:.1f} s")
    for r in evaluations:
        print(
            f"evaluation: {100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f} % over {r['num_eval']} "
            f"seeds ({r['epochs']} epochs)"
        )
    grid = run / "grid.png"
    print(f"image grid: {grid if grid.exists() else 'not written yet'}")


def _fail(message: str, status: int = 2) -> int:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)  # one line, whatever it holds
    return status


def distill_config(args: argparse.Namespace) -> DistillConfig:
    """The options a parsed `distill` command runs with: its config file, then its flags, then
    the preset they name (flags win). Raises ConfigError."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "resume", "overwrite")}
    values = _read_config_file(args.config) if args.config else {}
    values.update(given)
    return DistillConfig.from_dict(values)


def parse_distill(argv: list[str]) -> DistillConfig:
    """distill_config of a `distill ...` argument list, without running it."""
    return distill_config(_parser().parse_args(argv))


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "distill":
            config = distill_config(args)
            run = distill(config, resume=args.resume, overwrite=args.overwrite)
            if not config.quiet and int(os.environ.get("RANK", "0")) == 0:
                _show(run)
        elif args.command == "evaluate":
            from .distill.evaluate import evaluate_run

            result = evaluate_run(args.run, num_eval=args.num_eval, epochs=args.eval_epochs)
            print(
                f"{100 * result['accuracy_mean']:.2f} +- {100 * result['accuracy_std']:.2f} % over "
                f"{result['num_eval']} seeds"
            )
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
