"""The transferkit CLI with checkpoint writes that stall halfway once the run reaches STALL_AT_STEP, so a
test can kill the process while a checkpoint is half-written (not a test module: run as a script)."""

import io
import os
import sys
import time
from pathlib import Path

import torch

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
