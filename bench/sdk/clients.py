"""One measured client run, in a process of its own so that its peak memory is its own:

    python -m bench.sdk.clients members-sdk URL KEY AUDIENCE_ID
    python -m bench.sdk.clients members-httpx URL KEY AUDIENCE_ID

Each pages through every member of the audience (200 a page) and prints
``{"count": …, "seconds": …}``. ``members-httpx`` is the reference: the loop a user would write
by hand with httpx over the same pages, ``response.json()`` and the ids.
"""

from __future__ import annotations

import json
import sys
import time

import httpx

PAGE = 200


def members_sdk(url: str, key: str, audience_id: str) -> int:
    """Every member through the SDK's iterator."""
    from audiences.sdk import Client

    with Client(url, key=key) as client:
        return sum(1 for _ in client.audiences.members(audience_id, limit=PAGE))


def members_httpx(url: str, key: str, audience_id: str) -> int:
    """Every member through a hand-written httpx loop over the same pages."""
    count = 0
    headers = {"Authorization": f"Bearer {key}"}
    params: dict[str, str | int] = {"limit": PAGE}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        while True:
            response = client.get(f"/v1/audiences/{audience_id}/members", params=params)
            response.raise_for_status()
            page = response.json()
            count += sum(1 for _ in (member["id"] for member in page["data"]))
            if not page["next_cursor"]:
                return count
            params = {"limit": PAGE, "cursor": page["next_cursor"]}


RUNS = {"members-sdk": members_sdk, "members-httpx": members_httpx}


def main() -> None:
    """Run the client named on the command line and print its count and time."""
    name, url, key, audience_id = sys.argv[1:5]
    started = time.perf_counter()
    count = RUNS[name](url, key, audience_id)
    print(json.dumps({"count": count, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
