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


def test_a_guarded_command_and_its_children_stop_when_their_parent_is_killed_outright():
    """What keeps `lmforge server`'s servers from outliving it: a kill -9 of the parent stops the
    guarded command's whole process group (here a shell and the sleep it started)."""
    import signal
    import time

    import psutil

    parent_script = (
        "import subprocess, sys, time\n"
        "from lmforge.process import guarded\n"
        "p = subprocess.Popen(guarded(['sh', '-c', 'sleep 300; echo never']), start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_script], stdout=subprocess.PIPE, text=True)
    group: list[psutil.Process] = []
    try:
        guard = psutil.Process(int(parent.stdout.readline()))
        deadline = time.monotonic() + 60
        while len(guard.children(recursive=True)) < 2 and time.monotonic() < deadline:  # sh, then its sleep
            time.sleep(0.1)
        group = [guard, *guard.children(recursive=True)]
        assert len(group) >= 3, group
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(group, timeout=20)
        assert not alive, f"outlived their parent: {[p.cmdline() for p in alive]}"
    finally:
        parent.kill()
        for p in group:  # only what this test started
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
