"""The runtime: the app's state, composed of narrow services (see runtime.py)."""
from modules.runtime.runtime import DEMO_CHECKPOINT, REPO_ROOT, Runtime, RuntimeConfig

__all__ = ["Runtime", "RuntimeConfig", "DEMO_CHECKPOINT", "REPO_ROOT"]
