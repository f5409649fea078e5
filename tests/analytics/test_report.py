"""`parley up` counts its own meetings (the engine tails its JSONL file) and serves the report at
/analytics: refused without a token (401) or without the admin grant (403), SVG plots for an
admin."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from parley import tokens
from tests.conftest import eventually
from tests.signaling.helpers import Client


async def test_parley_up_reports_its_meetings_to_admins_only(
        parley_server: Callable[..., str], tmp_path: Path) -> None:
    base = parley_server()
    port = base.rsplit(":", 1)[1]
    secret = (tmp_path / f"parley-{port}" / "token-secret").read_text().strip()
    admin = tokens.mint(secret, identity="ops", room="*", grants=("admin",))
    guest = tokens.mint(secret, identity="eve", room="*")
    room = f"an-{uuid.uuid4().hex[:6]}"

    alice = await Client.connect(base, "alice", room)
    bob = await Client.connect(base, "bob", room)
    await alice.request("join", "joined", room=room)
    await bob.request("join", "joined", room=room)
    await bob.send(type="leave")
    await alice.expect("participant.left")

    async with httpx.AsyncClient(base_url=base) as http:
        async def counted() -> dict | None:
            data = (await http.get("/analytics/data",
                                   headers={"Authorization": f"Bearer {admin}"})).json()
            rows = {(r["region"], r["device"]): r for r in data["byLabels"]}
            row = rows.get(("local", "unknown"))
            return row if row and row["joined"] == 2 and row["events"].get(
                "participant.left") == 1 else None

        row = await eventually(counted, 10, "the two joins counted")
        assert row["meetingsStarted"] == 1 and row["participantsNow"] == 1, row

        assert (await http.get("/analytics")).status_code == 401
        refused = await http.get("/analytics", headers={"Authorization": f"Bearer {guest}"})
        assert refused.status_code == 403 and refused.json()["detail"]["code"] == "grant_missing"
        assert (await http.get(f"/analytics/data?token={guest}")).status_code == 403

        page = await http.get(f"/analytics?token={admin}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        svgs = re.findall(r"<svg .*?</svg>", page.text)
        assert len(svgs) == 10, len(svgs)  # usage, joins, drops, starts, quality x (24 h, 30 d)
        usage = svgs[0]
        assert "concurrent participants" in usage
        points = re.search(r'<polyline [^>]*points="([^"]+)"', usage)
        assert points and len(points.group(1).split()) == 1440  # one point per minute
        assert "<script" not in page.text and "http://" not in page.text.replace(
            'xmlns="http://www.w3.org/2000/svg"', "")
    await alice.close()
    await bob.close()
