"""Intent classifier for long messages: the need wins over the story.

Rasa's logistic regression reads a message as one bag of words and character n-grams, so in a
long message ("hier en rentrant du parc avec les enfants on a vu... bref, la piscine est ouverte
dimanche ?") the longest topic wins, usually the story. This subclass also reads each sentence of
a long message on its own (the sum of its tokens' rows of the sequence features: the same
columns as the message's sentence features) and, when the last sentence that asks for something
the town does (an FAQ topic, a ticket, a hand-off, a status, another town) is clear about it,
that intent is the message's. Short messages, and long ones whose sentences agree with the whole,
are classified exactly as before. Danger is read separately, on the whole message and on its
sentences, by the signal heads (bot/integrations/signal_classifier.py), which reuse
``sentence_spans`` and ``sentence_features`` from here.

Two readings (``fast_confidence``): beside the model over all the features it trains a second
logistic regression over the word and n-gram counts alone. A short message that this one reads
with at least ``fast_confidence`` keeps its reading, and the sentence vector is never computed
(``bot/integrations/sentence_embedder.py``); any other message, and every long one, is read with
the vector.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Text

import numpy as np
from scipy.sparse import csr_matrix, hstack, vstack

from rasa.engine.graph import ExecutionContext
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier
from rasa.shared.nlu.constants import TEXT, TEXT_TOKENS
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.integrations.sentence_embedder import ensure_vector, sentence_vectors, vector_pending

_SENTENCE_END = re.compile(r"[.!?…;]+|\n+|\s-\s")
# Intents that say what the citizen needs (small talk, thanks or a lone place do not).
_NEED_PREFIXES = ("faq_", "ticket_", "handoff_", "other_town", "political", "complaint_general",
                  "council_opinion")
_NOT_A_NEED = ("ticket_generic",)


def is_need(intent: Optional[str]) -> bool:
    return bool(intent) and intent.startswith(_NEED_PREFIXES) and intent not in _NOT_A_NEED


def sentence_spans(text: str) -> List[tuple]:
    """(start, end) character spans of the sentences of ``text``."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.start() > start:
            spans.append((start, match.end()))
        start = match.end()
    if start < len(text) and text[start:].strip():
        spans.append((start, len(text)))
    return spans


def count_features(messages: List[Message]) -> csr_matrix:
    """The messages' sparse sentence features alone (the word and n-gram counts), one row each."""
    rows = []
    for message in messages:
        sparse = message.get_sparse_features(attribute=TEXT)[1]
        rows.append(csr_matrix(sparse.features if sparse else []))
    return vstack(rows).tocsr()


def is_long(message: Message, min_tokens: int, min_sentences: int = 2) -> bool:
    """A message long enough to be read sentence by sentence."""
    return len(message.get(TEXT_TOKENS) or []) >= min_tokens \
        and len(sentence_spans(message.get(TEXT) or "")) >= min_sentences


def sentence_features(message: Message, spans: List[tuple], min_tokens: int = 1) -> Optional[csr_matrix]:
    """One row per sentence: the sum of its tokens' sequence features (the columns of the
    message's sentence features), then the sentence's own vector when the pipeline has the
    sentence embedder; None when the message has no usable sequence features."""
    tokens = message.get(TEXT_TOKENS) or []
    sequence = message.get_sparse_features(attribute=TEXT)[0]
    if sequence is None or not tokens:
        return None
    rows = csr_matrix(sequence.features)
    if rows.shape[0] != len(tokens):
        return None
    starts = np.array([t.start for t in tokens])
    segments, kept = [], []
    for start, end in spans:
        index = np.nonzero((starts >= start) & (starts < end))[0]
        if len(index) >= min_tokens:
            segments.append(csr_matrix(rows[index].sum(axis=0)))
            kept.append((start, end))
    if not segments:
        return None
    counts = vstack(segments).tocsr()
    vectors = sentence_vectors(message, kept)
    return counts if vectors is None else hstack([counts, csr_matrix(vectors)]).tocsr()


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class NeedFocusedClassifier(LogisticRegressionClassifier):
    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            **LogisticRegressionClassifier.get_default_config(),
            "min_tokens": 25,        # a message shorter than this is read as a whole only
            "min_sentences": 2,
            "need_confidence": 0.45,  # how sure the sentence must be of its intent to win
            "whole_confidence": 0.85,  # a whole message this sure of a need is not second-guessed
            # a short message read from its counts alone at least this sure keeps that reading
            # (no sentence vector); above 1, every message is read with the vector
            "fast_confidence": 0.7,
        }

    def __init__(self, config: Dict[Text, Any], name: Text, model_storage: ModelStorage,
                 resource: Resource) -> None:
        super().__init__(config, name, model_storage, resource)
        self.fast_clf: Any = None

    def train(self, training_data: TrainingData) -> Resource:
        from sklearn.base import clone

        super().train(training_data)
        examples = [e for e in training_data.intent_examples if e.get("intent") and e.get("text")]
        counts = count_features(examples) if examples else None
        if counts is not None and counts.shape[1] < self._create_X(examples[:1]).shape[1]:
            self.fast_clf = clone(self.clf).fit(counts, [e.get("intent") for e in examples])
            self.persist()
        return self._resource

    def persist(self) -> None:
        import skops.io as sio

        super().persist()
        if self.fast_clf is not None:
            with self._model_storage.write_to(self._resource) as model_dir:
                sio.dump(self.fast_clf, model_dir / f"{self._resource.name}_fast.skops")

    @classmethod
    def load(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> "NeedFocusedClassifier":
        import skops.io as sio

        component = super().load(config, model_storage, resource, execution_context, **kwargs)
        try:
            with model_storage.read_from(resource) as model_dir:
                path = model_dir / f"{resource.name}_fast.skops"
                if path.exists():
                    component.fast_clf = sio.load(path, trusted=sio.get_untrusted_types(file=path))
                    # column-major, so that its transpose is not copied at every prediction
                    component.fast_clf.coef_ = np.asfortranarray(component.fast_clf.coef_)
        except ValueError:
            pass
        return component

    def process(self, messages: List[Message]) -> List[Message]:
        full = [m for m in messages if not self._read_fast(m)]
        for message in full:
            ensure_vector(message)
        if full:
            super().process(full)
        for message in messages:
            self._focus_on_the_need(message)
        return messages

    def _read_fast(self, message: Message) -> bool:
        """Read a short message from its counts alone; False when it needs the vector."""
        if self.fast_clf is None or not vector_pending(message) \
                or is_long(message, self.config["min_tokens"], self.config["min_sentences"]):
            return False
        probabilities = self.fast_clf.predict_proba(count_features([message]))[0]
        if float(probabilities.max()) < self.config["fast_confidence"]:
            return False
        ranking = sorted(({"name": str(n), "confidence": float(p)} for n, p in zip(self.fast_clf.classes_, probabilities)),
                         key=lambda e: -e["confidence"])
        message.set("intent", ranking[0], add_to_output=True)
        message.set("intent_ranking", ranking[: self.config.get("ranking_length", 10) or None], add_to_output=True)
        return True

    def _focus_on_the_need(self, message: Message) -> None:
        tokens = message.get(TEXT_TOKENS) or []
        text = message.get(TEXT) or ""
        if len(tokens) < self.config["min_tokens"]:
            return
        spans = sentence_spans(text)
        if len(spans) < self.config["min_sentences"]:
            return
        whole = message.get("intent") or {}
        if is_need(whole.get("name")) and whole.get("confidence", 0) >= self.config["whole_confidence"]:
            return
        segments = sentence_features(message, spans)
        if segments is None or segments.shape[0] < 2:
            return
        probabilities = self.clf.predict_proba(segments)
        intents = self.clf.classes_
        for row in probabilities[::-1]:  # the last sentence that states a need
            best = int(np.argmax(row))
            if not is_need(str(intents[best])):
                continue
            if row[best] < self.config["need_confidence"] or intents[best] == whole.get("name"):
                return
            ranking = sorted(({"name": str(n), "confidence": float(p)} for n, p in zip(intents, row)),
                             key=lambda e: -e["confidence"])[: self.config.get("ranking_length", 10) or None]
            message.set("intent", ranking[0], add_to_output=True)
            message.set("intent_ranking", ranking, add_to_output=True)
            message.set("intent_of_the_whole_message", whole, add_to_output=True)
            return
