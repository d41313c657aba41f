"""`python -m train.eval key=value ...`: configs/eval.yaml over train.eval.run.EvalConfig."""
from train.common.cli import hydra_main
from train.eval.run import EvalConfig, main

if __name__ == "__main__":
    hydra_main("eval", EvalConfig, main)
