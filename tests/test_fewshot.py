from itertools import islice

from samner_dspy.evals.crossner import read_bio
from samner_dspy.evals.fewshot import bootstrap, sentence_f1
from samner_dspy.programs import DirectNER
from samner_dspy.schema import Schema
from tests.helpers import ScriptedLM
from tests.test_eval_runner import oracle_reply


def test_bootstrapped_demos_come_from_train_sentences_the_program_got_right(crossner_dir):
    train = list(islice(read_bio(crossner_dir / "music" / "train.txt"), 2))
    schema = Schema.from_name("crossner:music")
    test_sentence = "The Clash recorded London Calling ."
    # Optimizers copy the program, scripted LM included: answer by prompt, not by order.
    calibrator = ScriptedLM(
        {
            train[0].text: oracle_reply(train[0], wrong_label=True),  # wrong: not a demo
            train[1].text: oracle_reply(train[1]),  # right: becomes the demo
            test_sentence: {"entities": {"band": ["The Clash"], "album": ["London Calling"]}},
        }
    )
    compiled = bootstrap(DirectNER(lms={"calibrator": calibrator}), train, schema, demos=1)
    (demo,) = compiled.extract.predict.demos
    assert demo["text"] == train[1].text

    result = compiled(test_sentence, schema)
    assert [(e.text, e.label) for e in result.entities] == [("The Clash", "band"), ("London Calling", "album")]
    prompt = compiled.lms["calibrator"].history[-1]["messages"]
    assert any(train[1].text in m["content"] for m in prompt[:-1]), "the demo is shown before the question"
    assert train[0].text not in str(prompt)


def test_sentence_metric_is_strict():
    import dspy

    example = dspy.Example(gold=[(0, 3, "person")])
    right = dspy.Prediction(entities=[type("E", (), {"start": 0, "end": 3, "label": "person"})()])
    wrong = dspy.Prediction(entities=[type("E", (), {"start": 0, "end": 3, "label": "city"})()])
    assert sentence_f1(example, right) == 1.0 and sentence_f1(example, right, trace=[]) is True
    assert sentence_f1(example, wrong) == 0.0 and sentence_f1(example, wrong, trace=[]) is False
