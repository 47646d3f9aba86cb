"""Settings for the whole suite."""

from __future__ import annotations

import torch

# One torch thread in the test process, whatever the order the tests run in (test_bench.py
# used to set it for every test after it; test_behaviour_pin.py pins a one-thread run). On
# a 2-core machine that is busy with anything else, two threads per process wait on each
# other: a debug run's update took seconds instead of a quarter of one.
torch.set_num_threads(1)
