#!/usr/bin/env python3
"""Mint one HS256 JWT for the HAProxy jwt_verify row of bench/run.

Standard library only. The token has the same shape as a rolegate user token
(header with a `kid`, claims `sub`, `org`, `iat`, `exp`) so that both proxies
parse and verify a token of about the same size.

usage: mint-hs256.py --secret SECRET [--ttl SECONDS] [--exp-offset SECONDS]
"""
import argparse
import base64
import hashlib
import hmac
import json
import time
import uuid


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def compact(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", required=True, help="HMAC secret (used as UTF-8 bytes)")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default 3600)")
    args = parser.parse_args()

    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": str(uuid.uuid4())}
    claims = {"sub": str(uuid.uuid4()), "org": "bench", "iat": now, "exp": now + args.ttl}
    signing_input = compact(header) + "." + compact(claims)
    mac = hmac.new(args.secret.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256)
    print(signing_input + "." + b64url(mac.digest()))


if __name__ == "__main__":
    main()
