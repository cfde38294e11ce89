"""`vlx serve`: a policy server for trained VLAs (`create_app(policy, protocol=...)` → FastAPI app).

Three wire protocols over one policy object, with shared limits, authentication and validation: `vlx` — vlx's
REST `POST /act` (base64 PNG/JPEG `image` or `{camera: base64}` `images`, optional `state`, an instruction and
an optional unnorm_key; `{"action": [...]}` or, for a chunked model, `{"actions": [[...], ...]}`); `openvla` —
OpenVLA's `vla-scripts/deploy.py` REST `POST /act` (json_numpy arrays in, the json_numpy action array out);
`openpi` — openpi's msgpack websocket (observation dict in, `{"actions": (N, A), ...}` out). `GET /health`
reports the action size, the chunk size, the cameras, the state length and the dataset statistics the model
carries. See docs/serving.md for the schemas, the error codes and the security defaults.
"""

from vlx.serving.app import API_KEY_HEADER, PROTOCOLS, create_app
from vlx.serving.schema import ActRequest, ActResponse, ChunkResponse, ErrorResponse, Policy

__all__ = ["API_KEY_HEADER", "PROTOCOLS", "ActRequest", "ActResponse", "ChunkResponse", "ErrorResponse", "Policy",
           "create_app"]
