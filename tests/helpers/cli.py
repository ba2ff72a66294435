"""The command line in tests: real runs of ``prompt_free.cli.main`` on the tiny profile, in-process."""

from __future__ import annotations

import numpy as np
from PIL import Image

from prompt_free import cli

TINY = ["--profile", "tiny", "--steps", "2", "--size", "64x64"]


def run(argv, capsys):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors exit (code 2), as the console script does
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))
