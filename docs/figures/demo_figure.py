"""Makes docs/figures/demo.png: ``mmdstyle demo`` as a newcomer runs it, beside its two images.

Run from the repository's root, without pretrained weights in the cache (the README's figure
shows the weight-free network): ``python docs/figures/demo_figure.py``. About a minute on 2
cores. It writes the demo's own outputs into a temporary folder.
"""

import tempfile
from pathlib import Path

from mmdstyle import cli
from mmdstyle.analysis.figures import plot_image_grid
from mmdstyle.style.images import load_image, resize
from mmdstyle.style.samples import load_sample

FIGURE = Path(__file__).with_name("demo.png")

with tempfile.TemporaryDirectory() as folder:
    output = Path(folder) / "mmdstyle-demo.png"
    if cli.main(["demo", "-o", str(output), "--quiet"]) != 0:
        raise SystemExit("the demo did not finish: see its message above")
    result = load_image(output)
content = resize(load_sample("chelsea"), result.shape[:2])
style = resize(load_sample("hubble"), (result.shape[1], result.shape[1]))
titles = ["content: sample:chelsea", "style: sample:hubble", "mmdstyle demo"]
plot_image_grid([content, style, result], titles).savefig(FIGURE, dpi=100)
print(f"wrote {FIGURE}")
