#!/usr/bin/env python3
"""Checks a running camstream over HTTP, as a browser would, for the smoke
tests (scripts/docker-smoke.sh, scripts/deb-smoke.sh):

  - GET /healthz answers 200 within --ready-timeout seconds;
  - with --cameras, /api/cameras lists exactly those camera ids;
  - the camera's MJPEG stream is multipart/x-mixed-replace, and --frames
    parts are read by boundary and Content-Length, each image/jpeg and a
    whole JPEG (SOI FF D8 to EOI FF D9);
  - with --placeholder, reading goes on until a part is an offline
    placeholder (X-Camstream-Frame: placeholder), also a whole JPEG.

Prints what it saw; exits non-zero with the reason on the first failure.
Standard library only: it runs wherever python3 does.
"""

import argparse
import json
import sys
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--prefix", default="smoke")
parser.add_argument("--ready-timeout", type=float, default=60)
parser.add_argument("--camera", default="demo")
parser.add_argument("--cameras", help="comma-separated ids /api/cameras must list")
parser.add_argument("--frames", type=int, default=2)
parser.add_argument("--placeholder", action="store_true")
parser.add_argument("--placeholder-timeout", type=float, default=30)
args = parser.parse_args()

base = f"http://127.0.0.1:{args.port}"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def say(text):
    print(f"{args.prefix}: {text}", flush=True)


deadline = time.time() + args.ready_timeout
last = None
while True:
    try:
        with opener.open(f"{base}/healthz", timeout=5) as r:
            if r.status == 200:
                say(f"GET /healthz: {r.status} {r.read().decode().strip()}")
                break
    except OSError as e:
        last = e
    if time.time() > deadline:
        sys.exit(f"/healthz did not answer 200 within {args.ready_timeout:.0f}s: {last}")
    time.sleep(0.5)

if args.cameras is not None:
    with opener.open(f"{base}/api/cameras", timeout=5) as r:
        ids = [str(c["id"]) for c in json.load(r)]
    if ids != args.cameras.split(","):
        sys.exit(f"expected cameras {args.cameras.split(',')}, got {ids}")

stream = opener.open(f"{base}/api/cameras/{args.camera}/stream.mjpeg", timeout=20)
ctype = stream.headers["Content-Type"]
if not ctype.startswith("multipart/x-mixed-replace") or "boundary=" not in ctype:
    sys.exit(f"not a multipart stream: Content-Type {ctype!r}")
boundary = ctype.split("boundary=", 1)[1].strip().strip('"').encode()


def line():
    text = stream.readline(1024)
    if not text:
        sys.exit("the stream ended")
    return text.rstrip(b"\r\n")


def part():
    """The next part: (headers, JPEG bytes)."""
    while True:
        marker = line()
        if marker:
            break
    if marker != b"--" + boundary:
        sys.exit(f"expected boundary --{boundary.decode()}, got {marker[:80]!r}")
    headers = {}
    while h := line():
        key, _, value = h.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("content-type") != "image/jpeg":
        sys.exit(f"part is not image/jpeg: {headers}")
    jpeg = stream.read(int(headers["content-length"]))
    if jpeg[:2] != b"\xff\xd8" or jpeg[-2:] != b"\xff\xd9":
        sys.exit(
            f"part of {len(jpeg)} bytes is not a whole JPEG "
            f"(SOI {jpeg[:2].hex()}, EOI {jpeg[-2:].hex()})"
        )
    return headers, jpeg


frames = []
while len(frames) < args.frames:
    headers, jpeg = part()
    if headers.get("x-camstream-frame") != "placeholder":
        frames.append(len(jpeg))
say(f"{args.camera} stream: {len(frames)} JPEG frames of {frames} bytes, SOI and EOI in place")

if args.placeholder:
    deadline = time.time() + args.placeholder_timeout
    while True:
        headers, jpeg = part()
        if headers.get("x-camstream-frame") == "placeholder":
            say(f"{args.camera} stream: offline placeholder, a whole JPEG of {len(jpeg)} bytes")
            break
        if time.time() > deadline:
            sys.exit(f"no offline placeholder within {args.placeholder_timeout:.0f}s")
stream.close()
