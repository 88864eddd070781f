"""Deploy through a client generated from delivery-hook's OpenAPI document.

    openapi-python-client generate --path openapi.json
    DELIVERY_URL=... DELIVERY_SECRET=... DELIVERY_PROJECT=... python python_client.py <container>

The only hand-written part is the signing hook: it signs the exact bytes
httpx sends (the body, or for a GET the request target).
"""

import hashlib
import hmac
import os
import sys
import time

import httpx

from delivery_hook_client import Client
from delivery_hook_client.api.deploy import build_container
from delivery_hook_client.api.jobs import get_job
from delivery_hook_client.models import BuildRequest, Job, JobStatus, Problem

SECRET = os.environ["DELIVERY_SECRET"].encode()


def sign(request: httpx.Request) -> None:
    timestamp = str(int(time.time()))
    message = request.url.raw_path if request.method == "GET" else request.content
    request.headers["X-Timestamp"] = timestamp
    request.headers["X-Signature"] = hmac.new(SECRET, message + timestamp.encode(), hashlib.sha256).hexdigest()
    request.headers["X-Project"] = os.environ["DELIVERY_PROJECT"]


def main(container: str) -> int:
    client = Client(base_url=os.environ["DELIVERY_URL"], httpx_args={"event_hooks": {"request": [sign]}})
    accepted = build_container.sync_detailed(client=client, body=BuildRequest(container_name=container))
    print(f"buildContainer: {accepted.status_code}")
    job = accepted.parsed
    if not isinstance(job, Job):
        print(f"refused: {job}")
        return 2
    print(f"job {job.id}: {job.state.value} (service {job.service})")
    final = get_job.sync_detailed(client=client, id=job.id, wait=120).parsed
    if not isinstance(final, Job):
        print(f"getJob refused: {final}")
        return 2
    print(f"job {final.id}: {final.state.value} after {len(final.steps)} step(s)")
    # Refusals arrive as typed problem documents.
    refused = build_container.sync_detailed(client=client, body=BuildRequest(container_name=f"other-{container}"))
    problem = refused.parsed
    print(f"outside the policy: {refused.status_code} {problem.code if isinstance(problem, Problem) else problem}")
    if not isinstance(problem, Problem) or problem.code != "container_not_allowed":
        return 1
    return 0 if final.state == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
