"""Progress for people: a bar in a terminal, plain lines in logs.

SageMaker (and CI) capture stdout without a terminal; a progress bar there
turns into thousands of carriage-return fragments, so those get one plain
line every ``log_every`` steps instead.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)


def is_interactive(stream=None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


class Progress(Generic[T]):
    """Wraps one pass over a DataLoader and reports rate and ETA."""

    def __init__(
        self,
        iterable: Iterable[T],
        *,
        total: int,
        desc: str,
        log_every: int = 20,
        interactive: bool | None = None,
        unit: str = "batch",
        initial: int = 0,
    ):
        self.iterable = iterable
        self.total = total
        self.initial = initial  # steps done before this pass (a resumed epoch)
        self.desc = desc
        self.unit = unit
        self.log_every = max(1, log_every)
        self.interactive = is_interactive() if interactive is None else interactive
        self._bar: tqdm | None = None
        self._postfix: dict[str, str] = {}

    def set_postfix(self, **values: float) -> None:
        self._postfix = {k: f"{v:.4f}" for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self._postfix, refresh=False)

    def __iter__(self) -> Iterator[T]:
        if self.interactive:
            with tqdm(
                self.iterable,
                total=self.total,
                desc=self.desc,
                unit=self.unit,
                initial=self.initial,
                dynamic_ncols=True,
                leave=False,
            ) as bar:
                self._bar = bar
                yield from bar
            self._bar = None
            return
        start = time.monotonic()
        for step, item in enumerate(self.iterable, start=self.initial + 1):
            yield item
            if step % self.log_every == 0 or step == self.total:
                elapsed = time.monotonic() - start
                rate = (step - self.initial) / elapsed if elapsed > 0 else 0.0
                eta = (self.total - step) / rate if rate > 0 else 0.0
                extra = "".join(f" {k}={v}" for k, v in self._postfix.items())
                log.info(
                    "%s step %d/%d %.2f %s/s eta %.0fs%s", self.desc, step, self.total, rate, self.unit, eta, extra
                )
