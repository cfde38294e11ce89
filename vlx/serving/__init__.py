"""`vlx serve`: an HTTP policy server for trained VLAs (`create_app(policy)` → FastAPI app).

`POST /act` takes a base64 PNG/JPEG image, an instruction and an optional unnorm_key and returns the
policy's action; `GET /health` reports the action size and the dataset statistics the model carries.
See docs/serving.md for the schema, the error codes and the security defaults.
"""

from vlx.serving.app import API_KEY_HEADER, create_app
from vlx.serving.schema import ActRequest, ActResponse, ErrorResponse, Policy

__all__ = ["API_KEY_HEADER", "ActRequest", "ActResponse", "ErrorResponse", "Policy", "create_app"]
