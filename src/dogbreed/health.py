"""Waiting for a server to answer its health check: the native server's launcher and the local serving container
both use it, and it needs nothing beyond the standard library."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable


def wait_until_healthy(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Whether ``url`` answers 200 within ``timeout`` seconds, asking while ``alive()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False
