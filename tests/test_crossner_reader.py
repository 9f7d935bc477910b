from itertools import islice

from samner_dspy.evals.crossner import read_bio


def test_bio_files_become_sentences_with_character_offsets(crossner_dir):
    for domain in ("ai", "literature", "music", "politics", "science"):
        sentences = list(islice(read_bio(crossner_dir / domain / "test.txt"), 200))
        assert len(sentences) == 200
        for sentence in sentences:
            assert sentence.text == " ".join(sentence.tokens)
            for entity in sentence.entities:
                assert sentence.text[entity.start : entity.end] == entity.text
    first = next(read_bio(crossner_dir / "ai" / "test.txt"))
    assert [(e.text, e.label) for e in first.entities][:2] == [
        ("naive Bayes classifier", "algorithm"),
        ("Gaussian mixture model", "algorithm"),
    ]


def test_adjacent_entities_of_the_same_label_stay_apart(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("Ada\tB-person\nBob\tB-person\nmet\tO\nNew\tB-location\nYork\tI-location\n\n", encoding="utf-8")
    (sentence,) = read_bio(path)
    assert [(e.text, e.label, e.start) for e in sentence.entities] == [
        ("Ada", "person", 0),
        ("Bob", "person", 4),
        ("New York", "location", 12),
    ]
