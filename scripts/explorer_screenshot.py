"""The README's screenshot of the explorer: tiny-native's page, drawn by headless Chromium.

    python scripts/explorer_screenshot.py                 # -> docs/explorer.png
    python scripts/explorer_screenshot.py --token 4 --layer 2 --out /tmp/page.png

Builds the page with ``hooked-vlm explore`` (one held-out synthetic picture, the caption
prompt), then ``chromium --headless --screenshot`` with the selection in the URL fragment.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.browser import FLAGS, find_chromium  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-native")
    parser.add_argument("--token", type=int, default=4)
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--head", default="all")
    parser.add_argument("--size", default="1300,1680", help="window width,height in pixels")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "explorer.png")
    args = parser.parse_args()
    from hooked_vlm.data.synthetic import synthetic_dataset

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp:
        picture = Path(tmp) / "picture.png"
        synthetic_dataset("test", n=1)[0]["image"].save(picture)
        page = Path(tmp) / "page.html"
        subprocess.run([sys.executable, "-m", "hooked_vlm.cli", "explore", "--model",
                        args.model, "--image", str(picture), "--task", "caption", "--out",
                        str(page)], check=True)
        fragment = f"#token={args.token}&layer={args.layer}&head={args.head}"
        flags = [f for f in FLAGS if f != "--remote-debugging-pipe"]
        subprocess.run([chromium, *flags, f"--user-data-dir={tmp}/profile",
                        f"--window-size={args.size}", "--virtual-time-budget=5000",
                        f"--screenshot={args.out.resolve()}", page.as_uri() + fragment],
                       check=True, stderr=subprocess.DEVNULL)
    print(args.out)


if __name__ == "__main__":
    main()
