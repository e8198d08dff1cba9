"""``python -m simnpu_serve serve MODEL_PATH ...``."""

import sys

from simnpu_serve.cli import main

sys.exit(main(sys.argv[1:]))
