"""`python -m train.bench key=value ...`: configs/bench.yaml over train.bench.common.BenchConfig."""
from train.bench.common import BenchConfig
from train.bench.run import main
from train.common.cli import hydra_main

if __name__ == "__main__":
    hydra_main("bench", BenchConfig, main)
