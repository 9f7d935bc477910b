"""The HTML view in a real browser: headless Chromium renders the page from file://, and the rendered DOM must
hold every entity at its offsets, show hostile text as text without running it, and fill the details panel."""

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from samner_dspy.cli import main
from tests.conftest import require

FIXTURE = Path(__file__).parent / "fixtures" / "view_example.jsonl"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


class Rendered(HTMLParser):
    """What the rendered DOM shows: the title, the script and img elements, each sentence paragraph's text with
    its marks at (start, end) offsets inside that text, and the details panel's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.tags: list[str] = []
        self.paragraphs: list[dict] = []  # {"section": n, "cls": ..., "text": ..., "marks": [...]}
        self.panel = ""
        self._in = {"title": False, "panel": 0}
        self._sections = -1
        self._paragraph: dict | None = None
        self._mark: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "title":
            self._in["title"] = True
        elif tag == "section" and "record" in (attrs.get("class") or ""):
            self._sections += 1
        elif tag == "p" and "sentence" in (attrs.get("class") or ""):
            self._paragraph = {"section": self._sections, "cls": attrs["class"], "text": "", "marks": []}
        elif tag == "mark" and self._paragraph is not None:
            self._mark = {**attrs, "start": len(self._paragraph["text"])}
        if attrs.get("id") == "panel" or self._in["panel"]:
            self._in["panel"] += 1

    def handle_endtag(self, tag):
        if tag == "title":
            self._in["title"] = False
        elif tag == "mark" and self._mark is not None and self._paragraph is not None:
            self._mark["end"] = len(self._paragraph["text"])
            self._mark["text"] = self._paragraph["text"][self._mark["start"] :]
            self._paragraph["marks"].append(self._mark)
            self._mark = None
        elif tag == "p" and self._paragraph is not None:
            self.paragraphs.append(self._paragraph)
            self._paragraph = None
        if self._in["panel"]:
            self._in["panel"] -= 1

    def handle_data(self, data):
        if self._in["title"]:
            self.title += data
        if self._paragraph is not None:
            self._paragraph["text"] += data
        if self._in["panel"]:
            self.panel += data + "|"


def chromium(*args: str) -> str:
    result = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    require(Path(CHROMIUM).is_file(), "chromium (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("view")
    output = folder / "view.html"
    assert main(["view", str(FIXTURE), "-o", str(output)]) == 0
    profile = f"--user-data-dir={folder / 'profile'}"
    dom = chromium(profile, "--dump-dom", output.as_uri() + "?select=0.2")
    rendered = Rendered()
    rendered.feed(dom)
    return rendered, folder, output, profile


def records():
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def test_every_entity_and_gold_span_is_marked_at_its_offsets(page):
    rendered, *_ = page
    data = records()
    predicted = [p for p in rendered.paragraphs if "pred" in p["cls"]]
    gold = [p for p in rendered.paragraphs if "gold" in p["cls"]]
    assert len(predicted) == len(gold) == len(data), "one predicted and one gold row per sentence"
    for record, row, gold_row in zip(data, predicted, gold, strict=True):
        assert row["text"] == record["text"] == gold_row["text"], "the sentence shows as written"
        expected = sorted((e["start"], e["end"]) for e in record["entities"])
        assert [(m["start"], m["end"]) for m in row["marks"]] == expected
        assert [m["text"] for m in row["marks"]] == [record["text"][s:e] for s, e in expected]
        assert [m["data-label"] for m in row["marks"]] == [
            e["label"] for e in sorted(record["entities"], key=lambda e: e["start"])
        ]
        assert [(m["start"], m["end"]) for m in gold_row["marks"]] == sorted((g[0], g[1]) for g in record["gold"])
    zoe = predicted[0]["marks"]
    assert [m["text"] for m in zoe] == ["Zoë", "Zoë", "São Paulo"] and zoe[1]["start"] == 8
    assert "label" in zoe[2]["class"], "São Paulo is typed location where gold says city: a wrong label"
    assert "fp" in predicted[1]["marks"][1]["class"] and "fn" in gold[1]["marks"][1]["class"]


def test_hostile_sentence_is_shown_as_text_and_never_runs(page):
    rendered, *_ = page
    assert rendered.title == "samner view", "no script from the data changed the title"
    assert "img" not in rendered.tags, "the <img onerror> in the sentence never became an element"
    assert rendered.tags.count("script") == 2, "only the page's own data block and script"
    hostile = next(r["text"] for r in records() if "<script>" in r["text"])
    assert any(p["text"] == hostile for p in rendered.paragraphs), "the hostile text appears verbatim, as text"


def test_selecting_an_entity_fills_the_details_panel(page):
    rendered, *_ = page
    panel = rendered.panel
    assert "São Paulo|" in panel and "offsets|15:24|" in panel
    assert "archetype|Location (p = 0.880)|" in panel
    assert "found by|explorer|" in panel and "consensus|kept: explorer only, not noise-prone" in panel
    assert "calibration|definition-guided calibration, sentence mode chose 'location' (p = 0.720)|" in panel
    assert "score|0.4100|" in panel and "evaluation|wrong label (gold: city)|" in panel


def test_screenshot_renders(page):
    _, folder, output, profile = page
    shot = folder / "view.png"
    chromium(profile, "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,900", output.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, "a real, non-empty page image"
