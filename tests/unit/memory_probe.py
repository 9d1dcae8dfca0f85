"""Run as a script by test_memory.py (not a test module): a warm-up run and a measured run of a tiny fine-tuning
task in this fresh process; prints the measured run's peak RSS growth in MB as JSON. A fresh process, because a
long-lived one (pytest's) has freed memory that an allocation can reuse without growing the RSS.

    python tests/unit/memory_probe.py TINY_MODEL_DIR WORK_DIR [--leak]
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest's helpers


def status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def main() -> None:
    import gc

    from conftest import make_rows, tiny_config, write_csv
    from transferkit.config import load_config
    from transferkit.recipes import finetune

    model, work = Path(sys.argv[1]), Path(sys.argv[2])
    kept = []
    if "--leak" in sys.argv:  # keep 0.25 MB at every loss computation: what the guard must see
        import torch

        from transferkit.tasks.classification import ClassificationTask

        loss = ClassificationTask.loss

        def leaky(self, outputs, batch):
            kept.append(torch.ones(64 * 1024))
            return loss(self, outputs, batch)

        ClassificationTask.loss = leaky
    small = write_csv(work / "small.csv", make_rows(60, seed=3))
    data = write_csv(work / "d.csv", make_rows(1200, seed=3))

    def run(name, rows, epochs):
        cfg = tiny_config(model, rows, work, name=name, train={"epochs": epochs, "seed": 7, "batch_size": 16},
                          compare={"linear_probe": True})
        finetune.run(load_config(raw=cfg), progress=False)

    run("warmup", small, 1)  # every code path once, on 60 rows: imports, caches, the report's fonts
    gc.collect()
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS
    run("measured", data, 3)  # 20x the rows, 3x the epochs: what grows with the data or the steps shows
    print(json.dumps({"growth_mb": status("VmHWM:") - before, "leaked": len(kept)}))


if __name__ == "__main__":
    main()
