"""Progress bars for every loop that can take more than a couple of seconds (tqdm, on stderr).

Quiet under ``--quiet`` and whenever stderr is not a terminal (CI, pipes, files), so logs stay clean.
``bar`` is also the factory the probe and the engine take, so ``programs/`` never holds this switch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

QUIET = False  # set by the CLI's --quiet


def enabled() -> bool:
    return not QUIET and sys.stderr.isatty()


@contextmanager
def bar(total: int, desc: str) -> Iterator[Any]:
    """A progress bar with rate and ETA (``.update(n)``), or a silent stand-in."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="text", disable=not enabled() or total < 2, leave=False,
              dynamic_ncols=True, smoothing=0.1) as progress:
        yield progress


def track(items: Iterable[Any], desc: str, total: int | None = None) -> Iterable[Any]:
    """``items`` with a progress bar while they are consumed."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, disable=not enabled(), leave=False, dynamic_ncols=True)
