"""What /static/js/challenge.js does, in Python: solve a public form's proof of work."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any


def solve(challenge: dict[str, Any]) -> str:
    """The form's ``altcha`` value: find n with SHA-256(salt + n) == challenge."""
    for number in range(challenge["maxNumber"] + 1):
        digest = hashlib.sha256(f"{challenge['salt']}{number}".encode()).hexdigest()
        if digest == challenge["challenge"]:
            payload = {key: challenge[key] for key in ("algorithm", "challenge", "salt")}
            payload |= {"number": number, "signature": challenge["signature"]}
            return base64.b64encode(json.dumps(payload).encode()).decode()
    raise AssertionError("no solution")
