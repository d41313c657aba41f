"""`python -m train.probe key=value ...`: configs/probe.yaml over train.probe.run.ProbeConfig."""
from train.common.cli import hydra_main
from train.probe.run import ProbeConfig, main

if __name__ == "__main__":
    hydra_main("probe", ProbeConfig, main)
