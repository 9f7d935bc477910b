"""The prediction the programs return: a ``dspy.Prediction`` that remembers its text, so it can draw itself."""

from __future__ import annotations

from pathlib import Path

import dspy


class SamnerPrediction(dspy.Prediction):
    """``entities`` and ``trace`` (or a document's ``windows``/``traces``/``errors``) plus the input ``text``."""

    def to_html(self, text: str | None = None, title: str = "samner view") -> str:
        """This result as the self-contained page of ``samner view``; ``text`` defaults to the input's."""
        from samner_dspy.formats.view import prediction_record, render_html

        text = text if text is not None else self.get("text")
        if not isinstance(text, str):
            raise ValueError("this prediction does not hold its text: pass to_html(text=...)")
        return render_html([prediction_record(text, self)], title=title)

    def save_html(self, path: str | Path, text: str | None = None) -> Path:
        """Write :meth:`to_html` to ``path`` (one file; opens offline)."""
        path = Path(path)
        path.write_text(self.to_html(text), encoding="utf-8")
        return path
