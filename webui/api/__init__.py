"""The A1111-compatible HTTP API (/sdapi/v1): `install(app, runtime, args, credentials)`."""
from webui.api.routes import Api, install

__all__ = ["Api", "install"]
