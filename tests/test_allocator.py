"""The workflow jobs' allocator set-up (defaceaudit.allocator)."""

import platform
import subprocess
import sys

import pytest

from defaceaudit.allocator import GLIBC_VARIABLES, OPT_OUT, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

#: 20 times, buffers of 1 to 24 MiB alive together, then freed (as a network's activations
#: are); prints whether the allocator was tuned and the minor page faults of the loop
FAULTS = """
import resource, sys
import numpy as np
from defaceaudit.allocator import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
def layers():
    return [np.ones(mib * 2**18, np.float32) for mib in (1, 2, 4, 8, 16, 24)]
layers()  # the heap grows once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    layers()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
    )
    tuned, count = done.stdout.split()
    return tuned, int(count)


def test_opt_out_and_glibc_variables_leave_the_allocator_alone():
    assert keep_freed_memory({OPT_OUT: "0"}) is False
    for name in GLIBC_VARIABLES:
        assert keep_freed_memory({name: "65536"}) is False
    tunables = "glibc.malloc.trim_threshold=65536:glibc.pthread.rseq=0"
    assert keep_freed_memory({"GLIBC_TUNABLES": tunables}) is False


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_buffers_are_reused_without_new_page_faults():
    # 20 x 55 MiB touched = 281,600 pages: with glibc's defaults the heap shrinks and grows
    # again, or buffers are mapped anew (about 30,000 faults on glibc 2.36); tuned, none
    default_tuned, default_faults = faults("default")
    tuned, tuned_faults = faults("tuned")
    assert (default_tuned, tuned) == ("False", "True")
    assert default_faults > 10_000
    assert tuned_faults < 1_000
