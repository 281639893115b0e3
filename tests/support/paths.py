"""Where the checkout, the shared media and the shared models are."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"
MODELS = SHARED / "models"
# The cache the tests' settings use: it only holds what is derived from the shared models (the YOLO model cut
# at its heads), so one per user of this machine is enough and the derivation runs once, not per test.
MODEL_CACHE = Path(tempfile.gettempdir()) / f"proctor-test-cache-{os.getuid()}"


def shared_models():  # -> bot.analysis.detectors.ModelPaths
    """The shared models, resolved and checked by sha256 as the app does."""
    from adapters.models import model_paths
    from bot.settings import Settings

    return model_paths(Settings(models_dir=MODELS, cache_dir=MODEL_CACHE))
