"""The lab's Debian 12 guest image (tests/lab/roles/lab/files/debian) for integration tests."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

from support.lab import REPO

BUILD_SCRIPT = REPO / 'tests' / 'lab' / 'roles' / 'lab' / 'files' / 'debian' / 'build-image.sh'
# A build takes one to two minutes here; more on a loaded machine or a slow mirror.
BUILD_TIMEOUT = 900


def debian_image(lab_dir: pathlib.Path) -> pathlib.Path:
    """The image of the current recipe in lab_dir/images: built when missing, waited for when a
    build is under way (the one `make lab-up` starts in the background). Fails the test with the
    build's output when it cannot be built."""
    try:
        result = subprocess.run([str(BUILD_SCRIPT), str(lab_dir / 'images')], capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f'the Debian guest image was not built within {BUILD_TIMEOUT} s ({BUILD_SCRIPT})')
    if result.returncode != 0:
        pytest.fail(f'building the Debian guest image failed ({BUILD_SCRIPT} exited {result.returncode}):\n'
                    f'{result.stdout[-3000:]}\n{result.stderr[-3000:]}')
    path = pathlib.Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file(), f'{BUILD_SCRIPT} printed {path}, which is not a file'
    return path
