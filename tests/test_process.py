"""A command's process: imports without the garbage collector, the work collected as before."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from lmforge.process import imports_without_collection

collections = []
gc.callbacks.append(lambda phase, info: phase == "stop" and collections.append(info["generation"]))
with imports_without_collection():
    import prefect, torch  # half a million objects between them
    off_while_importing = not gc.isenabled()
during_imports = len(collections)
frozen = gc.get_freeze_count()

class Node:
    pass

garbage = Node()
garbage.me = garbage  # a reference cycle: only the collector frees it
del garbage
collected = gc.collect()
with imports_without_collection():  # a second command in the same process (tests run many)
    on_in_a_later_call = gc.isenabled()
print(off_while_importing, during_imports, frozen, gc.isenabled(), collected, on_in_a_later_call,
      gc.get_freeze_count() == frozen)
"""


def test_imports_run_without_collection_then_stay_out_of_its_sight_while_the_work_is_collected():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    off, during, frozen, enabled, collected, later_on, unchanged = out.stdout.split()
    assert off == "True" and during == "0", "the collector ran during the imports"
    assert int(frozen) > 100_000, "what the imports built was not frozen"
    assert enabled == "True" and int(collected) >= 1, "garbage made after the imports is not collected"
    assert later_on == "True" and unchanged == "True", "a later call froze again (garbage kept for good)"


def test_with_a_commands_thresholds_garbage_in_cycles_is_still_freed_without_asking():
    script = """
import gc, weakref
from lmforge.process import collect_less_often

collect_less_often()

class Node:
    pass

first = Node()
first.me = first
freed = weakref.ref(first)
del first
for _ in range(200_000):  # the allocations of a busy stage, each a small cycle of its own
    n = Node()
    n.me = n
print(freed() is None, gc.get_threshold()[0] > 700)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
