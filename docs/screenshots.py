"""Screenshots of TensorBoard as a user sees it: serve a log dir on 127.0.0.1, open it in headless Chromium.

Usage (after ``python examples/decoy_digits.py --root runs/decoy``; needs ``apt-get install chromium``)::

    python docs/screenshots.py runs/decoy --out docs

writes ``tensorboard_images.png`` (the IMAGES tab), ``tensorboard_scalars.png`` (the SCALARS tab,
filtered to the monitor's sections) and ``tensorboard_custom_scalars.png``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PAGES = {  # file: (URL fragment, window size)
    "tensorboard_images.png": ("#images&tagFilter=xai%2F(maps%7Cfilmstrip%7Cshortcut)", (1400, 1000)),
    "tensorboard_scalars.png": ("#scalars", (1400, 1600)),
    "tensorboard_custom_scalars.png": ("#custom_scalars", (1400, 1000)),
}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(url: str, deadline: float) -> None:
    """Polls ``url`` until it answers or ``deadline`` (a ``time.monotonic()`` value) passes."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"TensorBoard did not answer at {url}")


def screenshot(browser: str, url: str, path: Path, *, size: tuple[int, int] = (1400, 1000)) -> None:
    """One headless Chromium screenshot of ``url`` after its scripts have run."""
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size[0]},{size[1]}",
            "--virtual-time-budget=20000",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def main(argv: list[str] | None = None) -> None:
    """Serves ``logdir`` with TensorBoard and saves one screenshot per page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(args.logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/"
        wait_until_serving(base + "data/runs", time.monotonic() + 90)
        time.sleep(3)  # let TensorBoard load the event files
        args.out.mkdir(parents=True, exist_ok=True)
        for name, (fragment, size) in PAGES.items():
            screenshot(browser, base + fragment, args.out / name, size=size)
            print(f"wrote {args.out / name}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
