"""Write .dvc/offline_plots.html: DVC's plot page with Vega, Vega-Lite and Vega-Embed inlined, so
`dvc plots show` / `dvc plots diff` render with no network (DVC's own page loads them from a CDN).

The three libraries (BSD-3-Clause) come from their npm packages:

    npm pack vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0   # then untar each
    python scripts/offline_plots_template.py DIR_WITH_THE_THREE_PACKAGES
"""

import sys
from pathlib import Path

PACKAGES = [("vega", "5.33.1", "build/vega.min.js"), ("vega-lite", "5.23.0", "build/vega-lite.min.js"),
            ("vega-embed", "6.29.0", "build/vega-embed.min.js")]


def main(src: Path, out: Path) -> None:
    scripts = []
    for name, version, path in PACKAGES:
        (pkg,) = [p for p in src.glob(f"{name}-{version}*/package") if p.is_dir()]
        js = (pkg / path).read_text()
        if "</script" in js:
            raise SystemExit(f"{name} contains '</script': cannot inline it")
        scripts.append(f"<!-- {name} {version} (BSD-3-Clause), {path} of its npm package -->\n<script>{js}</script>")
    page = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC plots (fedops, offline)</title>
    %s
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
""" % "\n    ".join(scripts)
    out.write_text(page)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / ".dvc" / "offline_plots.html")
