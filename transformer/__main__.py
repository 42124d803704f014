"""`python -m transformer` trains, as `python -m transformer.train` does."""

import sys

from .train import main

sys.exit(main())
