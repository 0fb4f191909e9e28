"""Fixtures of the data tests: no test here sees the real home directory, $GPUCNN_DATA or the network."""
import urllib.error

import pytest

from gpucnn.data import datasets, download

NUM_TRAIN, NUM_TEST = 6, 4


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Small sample counts, HOME in tmp_path, no $GPUCNN_DATA, no system directory, no network."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GPUCNN_DATA", raising=False)
    monkeypatch.setattr(datasets, "_NUM_SAMPLES", {"train": NUM_TRAIN, "test": NUM_TEST})
    monkeypatch.setattr(datasets, "_SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "system"], "mnist": []})

    def no_network(url, destination):
        raise urllib.error.URLError("network disabled in tests")
    monkeypatch.setattr(download, "fetch_url", no_network)
    return home
