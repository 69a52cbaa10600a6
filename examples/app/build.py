"""Builds the example site: renders each page in content/ into an HTML file under the output directory."""

import argparse
import html
import json
import pathlib
import sys


def render(page: dict) -> str:
    """Return the HTML document for one page description."""
    title = html.escape(page["title"])
    paragraphs = "\n".join(f"    <p>{html.escape(p)}</p>" for p in page.get("paragraphs", []))
    return (
        "<!doctype html>\n"
        "<html lang=\"en\">\n"
        f"  <head><meta charset=\"utf-8\"><title>{title}</title></head>\n"
        "  <body>\n"
        f"    <h1>{title}</h1>\n"
        f"{paragraphs}\n"
        "  </body>\n"
        "</html>\n"
    )


def build(content: pathlib.Path, out: pathlib.Path, revision: str) -> list:
    """Render every content/*.json page into out/; returns the written file names."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(content.glob("*.json")):
        page = json.loads(source.read_text(encoding="utf-8"))
        target = out / (source.stem + ".html")
        target.write_text(render(page), encoding="utf-8")
        written.append(target.name)
    (out / "version.txt").write_text(revision + "\n", encoding="utf-8")
    written.append("version.txt")
    return written


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--content", default="content")
    parser.add_argument("--out", default="dist")
    parser.add_argument("--revision", default="unknown")
    args = parser.parse_args(argv)
    written = build(pathlib.Path(args.content), pathlib.Path(args.out), args.revision)
    print(f"built {len(written)} files into {args.out}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
