"""The identity-keyed LRU the denoisers cache collated rows in."""

import threading

import torch

from demon_nb.models.identity_cache import IdentityCache


def test_hits_by_identity_not_equality_and_evicts_least_recent():
    cache = IdentityCache(2)
    a, b, c = torch.zeros(3), torch.zeros(3), torch.ones(3)
    assert cache.get((a,)) is None
    assert cache.put((a,), "A") == "A" and cache.get((a,)) == "A"
    assert cache.get((b,)) is None  # equal content, another object
    cache.put((b,), "B")
    cache.get((a,))  # a is now the most recent
    cache.put((c,), "C")
    assert len(cache) == 2 and cache.get((b,)) is None and cache.get((a,)) == "A"
    assert cache.get((a, c)) is None and cache.get((c, a)) is None  # order and arity matter


def test_concurrent_use_keeps_the_bound():
    cache = IdentityCache(4)
    rows = [(torch.zeros(1),) for _ in range(64)]

    def hammer():
        for _ in range(50):
            for r in rows:
                if cache.get(r) is None:
                    cache.put(r, r[0])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 4
