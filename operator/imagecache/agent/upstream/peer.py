"""A peer agent as a byte source for one download (fleet fill, SPEC §2.9).

`PeerSource(base, credential=...)` reads ``<base>/v2/images/{quoted id}/file`` with ``Range``,
like an HTTP upstream (same chunking, stall and truncation handling), and nothing else:

- it sends only the credential it is given (the caller's, as the PUT carried it) plus
  ``X-Image-Cache-Peer-Read`` (so the peer serves only what it holds) and
  ``Accept-Encoding: identity``; never the agent's upstream token or Keystone credentials,
  which live in the upstream's own `UpstreamAuth`;
- a redirect is a failure (never followed), a 401 is a failure at once (not retried);
- it has its own client session, closed with `close()` when the download ends.

It implements only `open`: the metadata the bytes are verified against is always the upstream's.
The base was checked against ``peer_networks`` (peer_policy) before it got here.
"""

from __future__ import annotations

from urllib.parse import quote

from imagecache.agent.peer_policy import PEER_READ_HEADER
from imagecache.agent.upstream.http import HttpUpstream
from imagecache.agent.upstream.port import ImageMeta, ImageNotFound, PermanentUpstreamError
from imagecache.core.ids import is_valid_image_id


class PeerCredential:
    """The headers a peer request carries (`UpstreamAuth`): a 401 fails the peer at once."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = {
            **headers,
            PEER_READ_HEADER: "1",
            "Accept-Encoding": "identity",
        }

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def refused(self) -> None:
        raise PermanentUpstreamError("peer refused the credential (401)", reason="unauthorized")


class PeerSource(HttpUpstream):
    """``GET <peer>/v2/images/{id}/file`` (Range-resumable) with the caller's credential."""

    def __init__(self, base: str, *, credential: dict[str, str], stall_timeout: float) -> None:
        super().__init__(base, stall_timeout=stall_timeout, auth=PeerCredential(credential))

    def _bytes_path(self, image_id: str) -> str:
        if not is_valid_image_id(image_id):
            raise ImageNotFound(image_id)
        return f"/v2/images/{quote(image_id, safe='')}/file"

    async def metadata(self, image_id: str) -> ImageMeta:
        raise PermanentUpstreamError(
            "a peer is never asked for metadata: the upstream's decides", reason="not_supported"
        )
