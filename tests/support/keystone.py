"""`FakeKeystone`: a loopback Keystone v3 just real enough for keystoneauth, that can hang.

It answers version discovery (``GET /v3``), password authentication (``POST /v3/auth/tokens``:
the agent's own token `AGENT_TOKEN`, with a catalog naming itself as the identity service) and
token validation (``GET /v3/auth/tokens`` with ``X-Subject-Token``) by the subject token's
prefix: ``good-`` is valid with role ``admin``, ``malformed-`` is refused 400 (as Keystone
refuses a token over its ``max_token_size``), ``hang-`` never answers until `release()`,
anything else is unknown (404). `validations` counts the validation requests per token, and
`hanging` is set once `hanging_count` of them are waiting.

`clouds_yaml(path)` writes a clouds.yaml whose cloud ``fake`` authenticates here.
(The real Keystone is in tests/openstack; this one is for timeouts and floods, fast to start.)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import yaml
from aiohttp import web

AGENT_TOKEN = "upstream-secret"
FAR_FUTURE = "2099-01-01T00:00:00.000000Z"


class FakeKeystone:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.validations: Counter[str] = Counter()
        self.hanging_count = 0
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def waiting(self) -> int:
        """Validation requests hanging right now."""
        return self.hanging_count

    def release(self) -> None:
        self._released.set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v3", self._version)
        app.router.add_get("/v3/", self._version)
        app.router.add_post("/v3/auth/tokens", self._authenticate)
        app.router.add_get("/v3/auth/tokens", self._validate)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()

    def clouds_yaml(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "clouds": {
                        "fake": {
                            "auth": {
                                "auth_url": f"{self.url}/v3",
                                "username": "agent",
                                "password": "agent-password",
                                "project_name": "service",
                                "user_domain_name": "Default",
                                "project_domain_name": "Default",
                            },
                            "identity_api_version": 3,
                            "region_name": "RegionOne",
                        }
                    }
                }
            )
        )
        return path

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "version": {
                    "id": "v3.14",
                    "status": "stable",
                    "updated": "2020-04-07T00:00:00Z",
                    "links": [{"rel": "self", "href": f"{self.url}/v3/"}],
                    "media-types": [
                        {
                            "base": "application/json",
                            "type": "application/vnd.openstack.identity-v3+json",
                        }
                    ],
                }
            }
        )

    def _token_body(self, roles: list[str]) -> dict[str, object]:
        domain = {"id": "default", "name": "Default"}
        return {
            "token": {
                "methods": ["password"],
                "expires_at": FAR_FUTURE,
                "issued_at": "2020-01-01T00:00:00.000000Z",
                "user": {"id": "u1", "name": "agent", "domain": domain},
                "project": {"id": "p1", "name": "service", "domain": domain},
                "roles": [{"id": f"r-{name}", "name": name} for name in roles],
                "catalog": [
                    {
                        "type": "identity",
                        "id": "s1",
                        "name": "keystone",
                        "endpoints": [
                            {
                                "id": "e1",
                                "interface": "public",
                                "region": "RegionOne",
                                "region_id": "RegionOne",
                                "url": f"{self.url}/v3",
                            }
                        ],
                    }
                ],
            }
        }

    async def _authenticate(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            self._token_body(["admin"]), status=201, headers={"X-Subject-Token": AGENT_TOKEN}
        )

    async def _validate(self, request: web.Request) -> web.Response:
        subject = request.headers.get("X-Subject-Token", "")
        self.validations[subject] += 1
        if subject.startswith("hang-"):
            self.hanging_count += 1
            try:
                await self._released.wait()
            finally:
                self.hanging_count -= 1
            return web.json_response({"error": {"code": 404}}, status=404)
        if subject.startswith("good-"):
            return web.json_response(self._token_body(["admin"]))
        if subject.startswith("malformed-"):
            return web.json_response({"error": {"code": 400, "title": "Bad Request"}}, status=400)
        return web.json_response({"error": {"code": 404, "title": "Not Found"}}, status=404)
