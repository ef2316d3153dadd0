"""What a run shows while it works: per phase, a tqdm bar on stderr and, when the phase is done,
a one-line summary on stdout.

Bars are drawn only when stderr is a terminal: redirected to a file, tqdm's carriage-return
updates would be noise, and a failure must stay exactly one line on stderr (every CLI error is).
SPECTRAL_KERNELS_PROGRESS=1 draws them anyway (a log that wants them, the tests), =0 never.
A bar is cleared when its phase ends (leave=False) and the summary line takes its place, so what
stays on the screen is one line per phase. quiet (--quiet, and every process but rank 0) shows
neither; the CLI's result line is printed whatever quiet says.
"""

from __future__ import annotations

import os
import sys
import time

PROGRESS_ENV = "SPECTRAL_KERNELS_PROGRESS"


def bars_wanted() -> bool:
    forced = os.environ.get(PROGRESS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


class Phase:
    """with Phase("pool", total, quiet=...) as phase: phase.advance(network="1/5", loss=0.3) ...
    phase.summary = "5 networks trained ..." (printed as "pool: ..." on success)."""

    def __init__(self, name: str, total: int, *, quiet: bool, desc: str | None = None, unit: str = "it", initial=0):
        self.name, self.quiet, self.summary = name, quiet, None
        self.began = time.perf_counter()
        self.bar = None
        if not quiet and bars_wanted():
            from tqdm import tqdm

            terminal = sys.stderr.isatty()
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc or name,
                unit=unit,
                leave=False,
                dynamic_ncols=terminal,
                ncols=None if terminal else 0,  # not a terminal (forced on): the counts, untruncated
                file=sys.stderr,
            )

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.began

    def advance(self, steps: int = 1, **shown) -> None:
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(steps)

    def show(self, **shown) -> None:
        """New values on the bar without a step (e.g. the accuracy after a seed's last epoch)."""
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)

    def __enter__(self) -> Phase:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.bar is not None:
            if kind is None:
                self.bar.refresh()  # its final state once (tqdm skips updates closer than 0.1 s), then cleared
            self.bar.close()
        if kind is None and self.summary:
            say(self.name, self.summary, quiet=self.quiet)


def say(phase: str, summary: str, *, quiet: bool) -> None:
    """A phase's one-line summary, on stdout, unless quiet."""
    if not quiet:
        print(f"{phase}: {summary}", flush=True)
