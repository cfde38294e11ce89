"""`vlx serve`: an HTTP policy server for trained VLAs (`create_app(policy)` → FastAPI app).

`POST /act` takes a base64 PNG/JPEG image (or `{camera: base64}` for a model with named cameras), an
optional robot state, an instruction and an optional unnorm_key, and returns the policy's action — or,
for a chunked model, the first `execute_steps` actions of its chunk, or with `ensemble="exp"` the action
ensembled over the chunks predicted for the request's session. `GET /health` reports the action size,
the chunk size, the cameras, the state length and the dataset statistics the model carries.
See docs/serving.md for the schema, the error codes and the security defaults.
"""

from vlx.serving.app import API_KEY_HEADER, create_app
from vlx.serving.schema import ActRequest, ActResponse, ChunkResponse, ErrorResponse, Policy

__all__ = ["API_KEY_HEADER", "ActRequest", "ActResponse", "ChunkResponse", "ErrorResponse", "Policy", "create_app"]
