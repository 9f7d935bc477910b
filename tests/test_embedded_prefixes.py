"""The store of evaluated prompts (the llama.cpp side is in tests/test_embedded_model.py)."""

import os

import numpy as np

from samner_dspy.serving.embedded_prefixes import PrefixStore, common_prefix


def tokens(*values):
    return np.array(values, dtype=np.int32)


def test_common_prefix():
    assert common_prefix(tokens(1, 2, 3), tokens(1, 2, 4, 5)) == 2
    assert common_prefix(tokens(1, 2), tokens(1, 2, 3)) == 2
    assert common_prefix(tokens(), tokens(1)) == 0
    assert common_prefix(tokens(9), tokens(1)) == 0


def test_the_longest_shared_prefix_wins_and_a_new_store_reads_what_an_earlier_one_wrote(tmp_path):
    store = PrefixStore(tmp_path)
    store.put(tokens(1, 2, 3, 4), b"state-a")
    store.put(tokens(1, 2, 7), b"state-b")
    again = PrefixStore(tmp_path)  # another process
    shared, entry = again.best(tokens(1, 2, 3, 9))
    assert shared == 3 and again.state(entry) == b"state-a"
    shared, entry = again.best(tokens(5))
    assert shared == 0


def test_the_store_keeps_the_newest_entries_and_ignores_foreign_files(tmp_path):
    (tmp_path / "junk.kv").write_bytes(b"not a state")
    store = PrefixStore(tmp_path, keep=2)
    assert store.entries == {}
    for i in range(3):
        store.put(tokens(i, i), f"state-{i}".encode())
        path = store.entries[next(reversed(store.entries))].path
        os.utime(path, (1000 + i, 1000 + i))  # file times here have coarse resolution: order them
    assert len(store.entries) == 2
    assert sorted(int(e.tokens[0]) for e in store.entries.values()) == [1, 2]
    assert len(list(tmp_path.glob("*.kv"))) == 3, "the foreign file is left alone; the evicted entry is gone"
