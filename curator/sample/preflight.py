"""The check before a run buys anything: the teacher answers `GET /models`, with our key and
headers, from where we sent it (a redirect is refused, not followed: httpx drops Authorization
on another origin but not `teacher.headers`)."""

from __future__ import annotations

import openai

from curator.config import Manifest
from curator.errors import RunError
from curator.sample.sampler import normalise_endpoint
from curator.sample.transport import sync_client


def preflight(manifest: Manifest, api_key: str) -> None:
    """Fail in one line before anything is sent: server unreachable, bad key. A fleet fails only
    when no replica answers (the others are taken out and probed during the run)."""
    urls = manifest.teacher.replicas or [manifest.teacher.base_url]
    unreachable = []
    for url in urls:
        try:
            _check_server(manifest, api_key, url)
            return
        except RunError as e:
            if not manifest.teacher.replicas or "refused the API key" in str(e):
                raise
            unreachable.append(url)
    raise RunError(f"cannot reach any teacher replica (teacher.replicas): {', '.join(unreachable)}")


def _check_server(manifest: Manifest, api_key: str, url: str) -> None:
    what = "teacher.replicas" if manifest.teacher.replicas else "teacher.base_url"
    client = sync_client(normalise_endpoint(url), api_key, max_retries=2, timeout=min(30.0, manifest.limits.timeout_s),
                         headers=manifest.teacher.request_headers())
    try:
        client.models.list()
    except openai.APIConnectionError as e:
        raise RunError(f"cannot reach the teacher at {url} ({what}): {type(e).__name__}") from None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
        env = manifest.teacher.api_key_env or "(none)"
        raise RunError(f"the teacher at {url} refused the API key from {env} (HTTP {e.status_code})") from None
    except openai.APIStatusError as e:
        if 300 <= e.status_code < 400:
            target = e.response.headers.get("location") or "(no Location header)"
            raise RunError(f"the teacher at {url} ({what}) answered GET /models with HTTP {e.status_code}, a redirect to {target}: "
                           "redirects are not followed (set it to the server you mean, if you trust it)") from None
    except openai.APIError:
        pass  # no /models on this server: the first request will tell
    finally:
        client.close()
