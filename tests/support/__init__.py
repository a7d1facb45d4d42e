"""Test support: the lab, registries, the fake driver and the driver contract."""

import pathlib

# The checkout (the collection root), wherever a test file sits below tests/.
REPO = pathlib.Path(__file__).resolve().parents[2]
