"""``python -m pyro_vaeflow``, the ``pyro-vaeflow`` command line; under ``torchrun``:
``torchrun --standalone --nproc_per_node 2 -m pyro_vaeflow train ...``."""

import sys

from pyro_vaeflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
