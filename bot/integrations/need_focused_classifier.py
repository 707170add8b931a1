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
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Text

import numpy as np
from scipy.sparse import csr_matrix, hstack, vstack

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier
from rasa.shared.nlu.constants import TEXT, TEXT_TOKENS
from rasa.shared.nlu.training_data.message import Message

from bot.integrations.sentence_embedder import sentence_vectors

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
        }

    def process(self, messages: List[Message]) -> List[Message]:
        messages = super().process(messages)
        for message in messages:
            self._focus_on_the_need(message)
        return messages

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
