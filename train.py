"""Train with zolightning from the command line.

    python train.py fit                                  # the default demo (configs/demo.yaml)
    python train.py fit --config configs/mezo.yaml       # any recipe
    python train.py fit --config configs/smoke.yaml --trainer.max_steps 50 --optimizer.init_args.lr 1e-4
    python train.py fit --config configs/mezo.yaml --print_config   # the resolved config
    python train.py recipes                              # the shipped recipes; `--config NAME` runs one

The exit status is that of the ``zolightning`` command: 0 after a successful run, 2 for an argument error, 1 for a
failed run.
"""

import sys

from zolightning.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
