"""Where the checkout, the shared media and the shared models are."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"
MODELS = SHARED / "models"


def shared_models():  # -> bot.analysis.detectors.ModelPaths
    """The shared models, resolved and checked by sha256 as the app does."""
    from adapters.models import model_paths
    from bot.settings import Settings

    return model_paths(Settings(models_dir=MODELS))
