"""The tests, by kind: unit/, tasks/, app/, pins/, parity/, bench/; shared helpers in helpers/."""
