"""Numbers: stage timing and per-stage peak memory (train.profiling)."""

import time

import torch

from train.profiling import Stages


def test_each_stage_reports_its_own_peak_and_time():
    stages = Stages(torch.device("cpu"))
    with stages("big"):
        block = torch.ones(64 << 20)  # 256 MiB held inside the stage only
        block.add_(1)
        del block
    with stages("small"):
        time.sleep(0.05)
    with stages("small"):  # a stage entered twice adds its seconds
        time.sleep(0.05)
    got = stages.metrics()
    assert got["time/small"] >= 0.1 and got["time/big"] > 0
    if got["memory/peak_is_exact"]:  # Linux resets the high-water mark per stage
        assert got["memory/big_peak_gib"] - got["memory/small_peak_gib"] > 0.2
    else:
        assert got["memory/small_peak_gib"] > 0
    assert stages.metrics() == {"memory/peak_is_exact": got["memory/peak_is_exact"]}  # read out and restarted
