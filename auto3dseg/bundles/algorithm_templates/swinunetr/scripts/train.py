"""Train this bundle: python scripts/train.py run --config_file=configs/hyper_parameters.yaml [--key=value ...]"""

import fire

from auto3dseg.engine.training import run

if __name__ == "__main__":
    fire.Fire({"run": run})
