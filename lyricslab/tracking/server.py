"""Is the MLflow tracking server there? Asked once, quickly, before any MLflow call.

MLflow's HTTP client retries a refused connection with backoff for about four minutes, then
reports a missing run or experiment. One GET of the server's /health with a short timeout
says in a second that the server itself is the problem, and how to fix it.
"""

from __future__ import annotations

import urllib.error
import urllib.request


class TrackingServerError(ValueError):
    """The tracking URI names a server that does not answer; the message says what to do."""


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise TrackingServerError when `uri` is http(s) and its /health does not answer 200. Other URIs pass."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as reply:
            if reply.status == 200:
                return
            reason = f"HTTP {reply.status}"
    except urllib.error.HTTPError as err:
        reason = f"HTTP {err.code} from /health; is it an MLflow server?"
    except (urllib.error.URLError, OSError) as err:
        reason = str(getattr(err, "reason", err))
    raise TrackingServerError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it "
                              f"(make services, make ui or mlflow server) or fix tracking_uri=")
