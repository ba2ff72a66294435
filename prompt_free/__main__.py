"""``python -m prompt_free`` (and ``accelerate launch -m prompt_free ...``): the command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
