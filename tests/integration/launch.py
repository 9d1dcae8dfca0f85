"""The transferkit CLI with test-only instruments (not a test module: run as a script).

- the method `slow_steps` (`methods.slow_steps.seconds=0.25`): sleeps after each optimizer step, so a test
  can signal or kill a run between two steps; an observer, so --resume may drop it;
- STALL_AT_STEP / STALL_FLAG: checkpoint writes from that step on stall halfway (after writing half the
  file), so a test can kill the process while a checkpoint is half-written.
"""

import io
import os
import sys
import time
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field

from transferkit import methods
from transferkit.methods.base import Method, MethodConfig


class SlowStepsConfig(MethodConfig):
    method: ClassVar[str] = "slow_steps"
    affects_results: ClassVar[bool] = False
    seconds: float = Field(0.25, ge=0, description="Sleep after each optimizer step.")


@methods.register
class SlowSteps(Method):
    Config = SlowStepsConfig

    def on_step_end(self, **kw):
        time.sleep(self.cfg.seconds)


if "STALL_AT_STEP" in os.environ:
    real_save = torch.save
    stall_at = int(os.environ["STALL_AT_STEP"])
    flag = Path(os.environ["STALL_FLAG"])

    def stalled_save(obj, f, *args, **kwargs):
        step = obj.get("loop", {}).get("step", -1) if isinstance(obj, dict) else -1
        if step < stall_at:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        flag.write_text(str(step))
        time.sleep(300)  # killed here

    torch.save = stalled_save

from transferkit.cli import main  # noqa: E402

sys.argv = ["transferkit", *sys.argv[1:]]
main()
