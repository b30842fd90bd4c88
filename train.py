"""Train with zolightning from the command line.

    python train.py fit                                  # the default demo (configs/demo.yaml)
    python train.py fit --config configs/mezo.yaml       # any recipe
    python train.py fit --config configs/smoke.yaml --trainer.max_steps 50 --optimizer.init_args.lr 1e-4
    python train.py fit --config configs/mezo.yaml --print_config   # the resolved config
"""

from zolightning.cli import main

if __name__ == "__main__":
    main()
