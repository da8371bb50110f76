"""Loaded models in a worker, bounded by memory: admitted before they load, charged what they cost after.

Routing mode evicts the least recently used models until a new one fits
(``evict=True``); multi-model mode never evicts on its own, since the SageMaker
platform decides what to unload after a 507 (``evict=False``). Either way a
model that cannot fit is refused with 507 ``InsufficientMemory`` before
ONNX Runtime allocates anything for it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from dogbreed.serving.errors import InferenceError
from dogbreed.serving.memory import Ledger, LoadCost, MiB, process_rss, return_freed_memory
from dogbreed.serving.store import LRU

log = logging.getLogger(__name__)

# A loader gets this callback and calls it once it knows the model's cost, before it allocates the model.
Admit = Callable[[LoadCost], None]


def insufficient_memory(name: str, cost: LoadCost, detail: str) -> InferenceError:
    return InferenceError(
        507, "InsufficientMemory", f"not enough memory to load {name} (about {cost.steady // MiB} MiB): {detail}"
    )


class ModelCache(LRU):
    """Loaded models by key, least recently used first; thread-safe.

    ``ledger`` bounds them by memory (none: no memory bound), ``capacity`` by
    count (none: no count bound). Models leave only through :meth:`drop`, which
    releases their memory, never by :meth:`LRU.put`'s silent eviction.
    """

    def __init__(self, ledger: Ledger | None = None, capacity: int | None = None, evict: bool = True):
        super().__init__(capacity)
        self.ledger = ledger
        self.evict = evict

    def drop(self, key: str) -> bool:
        """Unload ``key`` and hand its memory back to the system; False when it was not loaded."""
        with self._lock:
            model = self._items.pop(key, None)
            if model is None:
                return False
            if self.ledger is not None:
                self.ledger.release(key)
            del model
            gc.collect()
            return_freed_memory()
            return True

    def admit(self, key: str, cost: LoadCost) -> None:
        """Make room for a model of ``cost``, or refuse it with 507."""
        with self._lock:
            if self.capacity is not None and self.evict:
                while len(self._items) >= self.capacity:
                    self._drop_oldest()
            self._make_room(repr(key), cost)

    def _make_room(self, name: str, cost: LoadCost) -> None:
        if self.ledger is None:
            return
        if not self.ledger.fits_alone(cost):
            budget = self.ledger.budget.models // MiB
            raise insufficient_memory(name, cost, f"the server's model budget is {budget} MiB")
        while (missing := self.ledger.shortfall(cost)) > 0:
            if not (self.evict and self._items):
                # Which models hold the memory: what an operator (or SageMaker's unloading) has to choose from.
                log.warning("cannot load %s: %d MiB short; loaded: %s", name, missing // MiB + 1, self.keys() or "none")
                raise insufficient_memory(name, cost, f"{missing // MiB + 1} MiB more is needed; unload a model")
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        key = next(iter(self._items))
        self.drop(key)
        log.info("unloaded %s, the least recently used model, to make room", key)

    def get_or_load(self, key: str, load: Callable[[Admit], Any]) -> Any:
        """The model under ``key``, loaded by ``load(admit)`` when absent and charged what it really took: the
        memory in use after it loaded less that in use once it was admitted (and others evicted for it)."""
        with self._lock:
            model = self.get(key)
            if model is not None:
                return model
            admitted_at: list[int] = []

            def admit(cost: LoadCost) -> None:
                self.admit(key, cost)
                if self.ledger is not None:
                    return_freed_memory()
                    admitted_at.append(process_rss())

            model = load(admit)
            if self.ledger is not None and admitted_at:
                return_freed_memory()
                cost = process_rss() - admitted_at[0]
                self.ledger.record(key, cost)
                log.info("loaded %s: %d MiB", key, cost // MiB)
            self._items[key] = model
            return model

    def reserve(self, key: str, cost: LoadCost, setup: Callable[[], None], what: str) -> None:
        """Run ``setup`` once, charged like a model that never unloads: for an import, whose memory stays."""
        with self._lock:
            if self.ledger is None or key in self.ledger.costs:
                setup()
                return
            self._make_room(what, cost)
            before = process_rss()
            setup()
            self.ledger.record(key, max(cost.steady, process_rss() - before))

    def cost(self, key: str) -> int | None:
        """The memory ``key`` was charged, where a ledger records it."""
        return None if self.ledger is None else self.ledger.costs.get(key)
