"""report.html in a real browser: headless Chromium renders the page and decodes every figure.

Needs the Debian package `chromium` (`.ci/run` installs it where it runs as root); skipped
with the reason otherwise.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from theorycheck.cli import app

SPEC = "synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=1"
WIDTH, HEIGHT = 1280, 4000
# after the load event, write every image's decoded size into the DOM for --dump-dom
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "image-sizes";
  out.textContent = JSON.stringify(Array.from(document.images, im => [im.naturalWidth, im.naturalHeight]));
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium not installed: the browser rendering test needs the Debian package `chromium` "
                "(`apt-get install -y chromium` as root; .ci/run does this where it can)")


def browser(exe: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "res"
    result = CliRunner().invoke(app, ["report", SPEC, "--steps", "100", "--out", str(out)])
    assert (out / "report.html").exists(), result.output
    return out / "report.html"


def png_widths(html: str) -> list[tuple[int, int]]:
    """(width, height) of every embedded PNG, read from its IHDR chunk."""
    sizes = []
    for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        data = base64.b64decode(b64)
        sizes.append(struct.unpack(">II", data[16:24]))
    return sizes


def test_chromium_screenshot_is_a_rendered_page(report_html, tmp_path):
    exe = chromium()
    shot = tmp_path / "shot.png"
    proc = browser(exe, tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", report_html.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    pixels = imread(shot)  # float RGB(A) in [0, 1]
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not a blank page
    rgb8 = (rgb.reshape(-1, 3) * 255).round().astype(np.int64)
    colours = np.unique((rgb8[:, 0] << 16) | (rgb8[:, 1] << 8) | rgb8[:, 2])
    assert colours.size > 200  # text, tables and plots, not a flat fill


def test_chromium_decodes_every_figure(report_html, tmp_path):
    exe = chromium()
    html = report_html.read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = browser(exe, tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    match = re.search(r'<pre id="image-sizes">(.*?)</pre>', proc.stdout, flags=re.S)
    assert match, proc.stderr[-2000:]
    decoded = [tuple(s) for s in json.loads(match.group(1))]
    expected = png_widths(html)
    assert len(expected) >= 4 and decoded == expected  # every <img> decoded at its PNG size
