"""A small HTTP client for the controller, used by the CLI (and handy in scripts and notebooks)."""

from __future__ import annotations

from typing import Any

import httpx

from shopfloor.settings import Settings


class ControllerError(RuntimeError):
    """Anything the controller refused or could not do, as a one-line message for humans.

    `status` is the HTTP status (None: no answer at all); `unreachable` says the controller
    or Temporal behind it could not be reached — worth retrying later, not fixing the call."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.status is None or self.status in (502, 503, 504)

    @property
    def refused(self) -> bool:
        """The request itself was wrong (bad input, unknown job, wrong state)."""
        return self.status is not None and 400 <= self.status < 500


class ShopfloorClient:
    def __init__(self, settings: Settings, *, timeout_s: float = 30.0) -> None:
        self.base_url = settings.public_controller_url
        headers = {}
        if settings.api_token is not None:
            headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as err:
            raise ControllerError(
                f"controller not reachable at {self.base_url}: is `shopfloor up` running? "
                "(or set SHOPFLOOR_CONTROLLER_URL)"
            ) from err
        except httpx.HTTPError as err:
            raise ControllerError(f"request to {self.base_url}{path} failed: {err}") from err
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if isinstance(detail, list):  # pydantic validation errors
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                    for d in detail
                )
            raise ControllerError(f"{response.status_code}: {detail}", status=response.status_code)
        return response

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A route whose answer is a JSON object."""
        answer: dict[str, Any] = self._call(method, path, **kwargs).json()
        return answer

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any controller route; the decoded JSON answer (None for 204)."""
        response = self._call(method, path, **kwargs)
        return response.json() if response.content else None

    def submit(self, kind: str, job: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        return self._object("POST", f"/jobs/{kind}", json=job, headers=headers)

    def status(self, job_id: str) -> dict[str, Any]:
        return self._object("GET", f"/jobs/{job_id}")

    def result(self, job_id: str, *, wait_s: float = 0) -> dict[str, Any]:
        timeout = httpx.Timeout(wait_s + 30.0)
        return self._object(
            "GET", f"/jobs/{job_id}/result", params={"wait": wait_s}, timeout=timeout
        )

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._object("POST", f"/jobs/{job_id}/cancel")

    def list(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 20,
        outcome: str | None = None,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if outcome:
            params["outcome"] = outcome
        if kind:
            params["kind"] = kind
        if status:
            params["status"] = status
        jobs: list[dict[str, Any]] = self._call("GET", "/jobs", params=params).json()
        return jobs

    def signal(self, job_id: str, name: str, body: Any = None) -> dict[str, Any]:
        return self._object("POST", f"/jobs/{job_id}/signals/{name}", json=body)

    def query(self, job_id: str, name: str) -> Any:
        return self._call("GET", f"/jobs/{job_id}/queries/{name}").json()

    def update(self, job_id: str, name: str, body: Any = None) -> Any:
        return self._call("POST", f"/jobs/{job_id}/updates/{name}", json=body).json()

    def upload(self, name: str, data: bytes) -> str:
        uri: str = self._object("PUT", f"/uploads/{name}", content=data)["uri"]
        return uri
