"""Fixtures for tests against the running lab (`make lab-up`; `make test` starts it)."""

import pytest

from support.lab import LAB_DIR, Guests, Lab


@pytest.fixture(scope='session')
def lab() -> Lab:
    if not (LAB_DIR / 'lab.json').is_file():
        pytest.fail(f'the lab is not up ({LAB_DIR}/lab.json missing): run `make lab-up` first')
    return Lab(LAB_DIR)


@pytest.fixture
def guests(lab):  # pylint: disable=redefined-outer-name
    made = Guests(lab)
    yield made
    made.cleanup()
