"""Tests for the example site builder."""

import pathlib
import tempfile
import unittest

import build


class RenderTest(unittest.TestCase):
    def test_escapes_text(self):
        page = build.render({"title": "A <b> title", "paragraphs": ["x & y"]})
        self.assertIn("<h1>A &lt;b&gt; title</h1>", page)
        self.assertIn("<p>x &amp; y</p>", page)

    def test_builds_every_page_and_the_version(self):
        with tempfile.TemporaryDirectory() as tmp:
            written = build.build(pathlib.Path("content"), pathlib.Path(tmp), "abc123")
            self.assertIn("index.html", written)
            self.assertEqual((pathlib.Path(tmp) / "version.txt").read_text().strip(), "abc123")


if __name__ == "__main__":
    unittest.main()
