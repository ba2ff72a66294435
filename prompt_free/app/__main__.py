"""``python -m prompt_free.app``: start the app (the options of ``python app.py``)."""

import sys

from .main import main

sys.exit(main())
