"""``IdentityCache``: a small thread-safe LRU keyed by the identity of objects.

Denoisers cache work per condition row (collated batches, cross-attention K/V).
Rows are keyed by ``id``; the cache holds the objects themselves, so an id cannot
be reused by a new object while its entry lives, and a hit is re-checked with
``is``.  ``Ring.submit`` collates on the caller's thread while the tick thread
collates too, hence the lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class IdentityCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[int, ...], tuple[tuple, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, objects: tuple) -> Any | None:
        """The value stored for exactly these objects (by identity, in order), else None."""
        key = tuple(map(id, objects))
        with self._lock:
            entry = self._items.get(key)
            if entry is None or any(a is not b for a, b in zip(entry[0], objects)):
                return None
            self._items.move_to_end(key)
            return entry[1]

    def put(self, objects: tuple, value: Any) -> Any:
        """Store ``value`` for ``objects`` (evicting the least recently used); returns ``value``."""
        with self._lock:
            self._items[tuple(map(id, objects))] = (tuple(objects), value)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
