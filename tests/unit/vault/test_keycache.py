"""The vault's key cache: keys for a short lifetime, never past a shred it has seen."""

from __future__ import annotations

from shared.vault.keycache import KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_kept_for_its_lifetime_and_then_dropped() -> None:
    clock = Clock()
    cache = KeyCache(30.0, clock=clock)
    cache.put("s", b"k", cache.generation)
    clock.now += 29.9
    assert cache.get("s") == b"k"
    clock.now += 0.1
    assert cache.get("s") is None
    assert len(cache) == 0


def test_a_forgotten_key_is_gone_at_once() -> None:
    cache = KeyCache(30.0)
    cache.put("s", b"k", cache.generation)
    cache.put("other", b"o", cache.generation)
    cache.forget("s")
    assert cache.get("s") is None
    assert cache.get("other") == b"o"


def test_a_key_loaded_while_a_shred_was_seen_is_not_kept() -> None:
    # The race the generation closes: a load reads the key, the shred's notice arrives
    # (forget), then the load finishes and offers the key read before the shred.
    cache = KeyCache(30.0)
    before_load = cache.generation
    cache.forget("s")
    cache.put("s", b"destroyed key", before_load)
    assert cache.get("s") is None
    cache.put("s", b"later key", cache.generation)  # a load started after: kept
    assert cache.get("s") == b"later key"


def test_clear_drops_every_key_and_keeps_out_loads_in_flight() -> None:
    cache = KeyCache(30.0)
    cache.put("a", b"1", cache.generation)
    in_flight = cache.generation
    cache.clear()
    cache.put("b", b"2", in_flight)
    assert cache.get("a") is None
    assert cache.get("b") is None


def test_expired_keys_are_pruned_and_the_size_is_bounded() -> None:
    clock = Clock()
    cache = KeyCache(10.0, size=3, clock=clock)
    for name in ("a", "b"):
        cache.put(name, name.encode(), cache.generation)
    clock.now += 11  # a and b expire without being read again...
    cache.put("c", b"c", cache.generation)
    assert len(cache) == 1  # ...and go at the next put
    for name in ("d", "e", "f"):
        cache.put(name, name.encode(), cache.generation)
    assert len(cache) == 3
    assert cache.get("c") is None  # the oldest made room
    assert cache.get("f") == b"f"


def test_a_lifetime_of_zero_caches_nothing() -> None:
    cache = KeyCache(0.0)
    cache.put("s", b"k", cache.generation)
    assert cache.get("s") is None
