"""Signals learned beside the intent: danger to people, the kind of a ticket, the writer's language.

A Rasa NLU component placed last in the pipeline (after the intent classifier and the fallback).
It trains three small logistic regressions on the same sparse features as the intent classifier
(words and character n-grams), from labels the training data already carries:

- **danger** (none / violence / danger / suicide): from the intents ``urgence_violence``,
  ``urgence_danger`` and ``urgence_detresse`` against every other example. A binary-minded head
  with balanced class weights finds danger told without the usual words (a child on a window
  sill, a neighbour not seen for days, "je ne vois plus l'intérêt de continuer") that the
  60-intent classifier spreads over tickets; the look-alikes (traffic "feux", "mort de rire",
  a dead street lamp, "urgent" paperwork) are negative examples under their own intents.
- **kind** (report / request / complaint): from the ``kind`` metadata of the ticket blocks of
  ``data/nlu/tickets/`` and of the public comments; general discontent counts as complaint.
- **language** (fr / en): from the ``language: en`` metadata of the English blocks.
- **elsewhere** (about another commune or body, or not): from the ``other_town`` examples. The
  intent classifier hears "piscine" and answers with our pool; this head hears "à Saint-Aubin".

It then settles the intent the dialogue sees, so every rule and form reacts the same way:
a danger the head is sure of becomes the ``urgence_*`` intent whatever the classifier said;
an ``urgence_*`` intent the head strongly disagrees with falls back to the next intent (the
false alarms). Between ``possible_threshold`` and ``urgent_threshold`` the message keeps its
intent and is marked ``possible`` danger: the action server adds the emergency line to the
normal answer and tells the community manager. The lexical net of ``bot.safety`` stays as a
backstop. The decision is in ``parse_data["signals"]``.

Like the intent classifier, each head is trained twice, over all the features and over the word
and n-gram counts alone. A message the intent classifier read without its sentence vector is read
by the count-only heads first; the vector is computed, and every head reads the message again
with it, as soon as one of them is unsure: some danger (``fast_danger_floor``; for a message long
enough to be searched sentence by sentence, the same trace as for that search), or a language,
another town or — for a ticket — a kind read with less than ``fast_confidence``.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text, Type

import numpy as np
from scipy.sparse import csr_matrix, hstack, vstack

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.featurizer import Featurizer
from rasa.shared.nlu.constants import INTENT, METADATA, METADATA_EXAMPLE, METADATA_INTENT, TEXT, TEXT_TOKENS
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.integrations.need_focused_classifier import count_features, sentence_features, sentence_spans
from bot.integrations.sentence_embedder import ensure_vector, vector_pending
from bot.safety import danger_reason as lexical_danger_reason

logger = logging.getLogger(__name__)

SIGNALS = "signals"
NONE = "none"
DANGER_BY_INTENT = {"urgence_violence": "violence", "urgence_danger": "danger", "urgence_detresse": "suicide"}
INTENT_BY_DANGER = {reason: intent for intent, reason in DANGER_BY_INTENT.items()}
REASON_BY_LEXICAL = {"distress_violence": "violence", "distress_danger": "danger", "distress_suicide": "suicide"}
COMPLAINT_INTENTS = ("complaint_general", "council_opinion")
KINDS = ("report", "request", "complaint")
HEADS = ("danger", "kind", "language", "elsewhere")
OTHER_TOWN = "other_town"
# Intents whose ticket takes the learned kind (its reading must be sure to skip the vector).
_TAKES_A_KIND = ("ticket_", "complaint_general", "council_opinion")
# Intents an "elsewhere" reading may replace: an answer with our facts, a ticket for our services.
_ANSWERS_WITH_OUR_FACTS = ("faq_", "ticket_", "out_of_scope", "nlu_fallback", "inform_")


def example_metadata(message: Message, key: str) -> Optional[str]:
    """A label from the example's metadata, else from its intent block's metadata."""
    metadata = message.get(METADATA) or {}
    for level in (METADATA_EXAMPLE, METADATA_INTENT):
        value = (metadata.get(level) or {}) if isinstance(metadata.get(level), dict) else {}
        if value.get(key) is not None:
            return str(value[key])
    return None


def training_label(head: str, message: Message) -> Optional[str]:
    """The label one head learns from a training example (None: the example is not used)."""
    intent = message.get(INTENT)
    if head == "danger":
        return DANGER_BY_INTENT.get(intent, NONE)
    if head == "kind":
        kind = example_metadata(message, "kind")
        if kind in KINDS:
            return kind
        return "complaint" if intent in COMPLAINT_INTENTS else None
    if head == "language":
        return "en" if example_metadata(message, "language") == "en" else "fr"
    if head == "elsewhere":
        return "elsewhere" if intent == OTHER_TOWN else "here"
    raise ValueError(head)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class SignalClassifier(GraphComponent):
    """Danger, ticket kind and language heads; settles the intent in case of danger."""

    @classmethod
    def required_components(cls) -> List[Type]:
        return [Featurizer]

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            "max_iter": 400,
            "C": 1.0,
            # weight of the danger classes against "none" (1.0) in the danger head; "balanced"
            # weighs them by their rarity (~40x here), which finds more and raises more false alarms
            "danger_class_weight": "balanced",
            # danger probability (1 - p(none)) of the whole message at or above which it is an
            # emergency, and the same for its most dangerous sentence (long messages)
            "urgent_threshold": 0.9,
            "sentence_urgent_threshold": 0.7,
            # ... at or above which the normal answer also carries the emergency line
            "possible_threshold": 0.3,
            # an urgence_* intent whose danger probability is below this is a false alarm
            "veto_threshold": 0.3,
            # in a message of at least sentence_message_tokens tokens, sentences of at least
            # sentence_min_tokens tokens are also read alone by the danger head
            "sentence_message_tokens": 15,
            "sentence_min_tokens": 8,
            # ... and only when the whole message already shows a trace of danger: a story with
            # none at all is not searched sentence by sentence (fewer false alarms, same recall)
            "sentence_whole_floor": 0.01,
            # weight of "about another town" against "about ours" (1.0), and the probability at
            # or above which a message about our facts is read as about another town
            "elsewhere_class_weight": 10.0,
            "elsewhere_threshold": 0.5,
            # a message read without its sentence vector keeps the count-only heads' reading when
            # its danger probability is below fast_danger_floor (below sentence_whole_floor for a
            # message long enough to be searched sentence by sentence) and its language, other
            # town and kind (tickets) are read with at least fast_confidence; else it is read
            # again with the vector
            "fast_danger_floor": 0.1,
            "fast_confidence": 0.8,
        }

    def __init__(self, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource) -> None:
        self.config = {**self.get_default_config(), **config}
        self.heads: Dict[str, Any] = {}
        self.fast_heads: Dict[str, Any] = {}
        self._model_storage = model_storage
        self._resource = resource

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "SignalClassifier":
        return cls(config, model_storage, resource)

    # --- features ------------------------------------------------------------------------------
    @staticmethod
    def _features(messages: List[Message]) -> csr_matrix:
        rows = []
        for message in messages:
            sparse = message.get_sparse_features(attribute=TEXT)[1]
            dense = message.get_dense_features(attribute=TEXT)[1]
            rows.append(hstack([csr_matrix(sparse.features if sparse else []),
                                csr_matrix(dense.features if dense else [])]))
        return vstack(rows).tocsr()

    # --- training ------------------------------------------------------------------------------
    def train(self, training_data: TrainingData) -> Resource:
        from sklearn.linear_model import LogisticRegression

        examples = [e for e in training_data.intent_examples if e.get(INTENT) and e.get(TEXT)]
        if not examples:
            return self._resource
        X = self._features(examples)
        counts = count_features(examples)
        for head in HEADS:
            labels = [training_label(head, e) for e in examples]
            rows = [i for i, label in enumerate(labels) if label is not None]
            classes = {labels[i] for i in rows}
            if len(classes) < 2:
                logger.debug("signal head %s: fewer than two labels, not trained", head)
                continue
            y = [labels[i] for i in rows]
            self.heads[head] = self._fit(LogisticRegression, head, classes, X[rows], y)
            if counts.shape[1] < X.shape[1]:
                self.fast_heads[head] = self._fit(LogisticRegression, head, classes, counts[rows], y)
        self.persist()
        return self._resource

    def _fit(self, model: Any, head: str, classes: set, X: csr_matrix, y: List[str]) -> Any:
        clf = model(C=self.config["C"], max_iter=self.config["max_iter"],
                    class_weight=self._class_weight(head, classes), random_state=42)
        clf.fit(X, y)
        clf.coef_ = np.asfortranarray(clf.coef_)  # contiguous transpose at prediction
        return clf

    def _class_weight(self, head: str, classes: set) -> Any:
        weight = self.config.get(f"{head}_class_weight", "balanced")
        if weight == "balanced":
            return "balanced"
        common = {"danger": NONE, "elsewhere": "here"}[head]
        return {label: (1.0 if label == common else float(weight)) for label in classes}

    def persist(self) -> None:
        import skops.io as sio

        with self._model_storage.write_to(self._resource) as model_dir:
            sio.dump(self.heads, model_dir / "signal_heads.skops")
            if self.fast_heads:
                sio.dump(self.fast_heads, model_dir / "signal_heads_fast.skops")

    @classmethod
    def load(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> "SignalClassifier":
        import skops.io as sio

        component = cls(config, model_storage, resource)
        try:
            with model_storage.read_from(resource) as model_dir:
                path = model_dir / "signal_heads.skops"
                heads = sio.load(path, trusted=sio.get_untrusted_types(file=path))
                fast_path = model_dir / "signal_heads_fast.skops"
                fast_heads = sio.load(fast_path, trusted=sio.get_untrusted_types(file=fast_path)) \
                    if fast_path.exists() else {}
        except (ValueError, FileNotFoundError):
            logger.debug("signal heads not found in the model: no learned signals")
            return component
        for clf in [*heads.values(), *fast_heads.values()]:
            clf.coef_ = np.asfortranarray(clf.coef_)
        component.heads = heads
        component.fast_heads = fast_heads
        return component

    # --- prediction ----------------------------------------------------------------------------
    def _probabilities(self, head: str, X: csr_matrix, heads: Optional[Dict[str, Any]] = None) -> List[Dict[str, float]]:
        clf = (self.heads if heads is None else heads).get(head)
        if clf is None:
            return [{} for _ in range(X.shape[0])]
        probas = clf.predict_proba(X)
        return [{str(label): float(p) for label, p in zip(clf.classes_, row)} for row in probas]

    def process(self, messages: List[Message]) -> List[Message]:
        messages_with_text = [m for m in messages if m.get(TEXT)]
        if not messages_with_text:
            return messages
        for message in messages_with_text:
            predictions = self._fast_reading(message)
            if predictions is None:
                ensure_vector(message)
                X = self._features([message])
                predictions = {head: self._probabilities(head, X)[0] for head in HEADS}
            danger = predictions["danger"]
            kind = predictions["kind"]
            language = predictions["language"]
            elsewhere = predictions["elsewhere"].get("elsewhere", 0.0)
            signals = {
                "danger": self._settle_danger(message, danger),
                "elsewhere": self._settle_elsewhere(message, elsewhere),
                "kind": max(kind, key=kind.get) if kind else None,
                "kind_probabilities": {k: round(v, 4) for k, v in kind.items()},
                "language": max(language, key=language.get) if language else "fr",
                "english": round(language.get("en", 0.0), 4),
                "sentence_vector": not vector_pending(message),
            }
            message.set(SIGNALS, signals, add_to_output=True)
        return messages

    def _fast_reading(self, message: Message) -> Optional[Dict[str, Dict[str, float]]]:
        """The count-only heads' reading of a message the intent classifier read without its
        vector, when every head that matters is sure of it; else None (read it with the vector)."""
        if not self.fast_heads or not vector_pending(message):
            return None
        X = count_features([message])
        reading = {head: self._probabilities(head, X, self.fast_heads)[0] for head in HEADS}
        sure = self.config["fast_confidence"]
        short = len(message.get(TEXT_TOKENS) or []) < self.config["sentence_message_tokens"]
        floor = self.config["fast_danger_floor"] if short else self.config["sentence_whole_floor"]
        if reading["danger"] and 1.0 - reading["danger"].get(NONE, 1.0) >= floor:
            return None
        name = (message.get(INTENT) or {}).get("name") or ""
        heads_that_matter = ["language", "elsewhere"] + (["kind"] if name.startswith(_TAKES_A_KIND) else [])
        if any(reading[head] and max(reading[head].values()) < sure for head in heads_that_matter):
            return None
        return reading

    def _sentence_danger(self, message: Message) -> Dict[str, float]:
        """In a long message the danger head also reads each sentence alone ("…et en passant devant
        l'école j'ai vu des flammes"): the most dangerous sentence's reading ({} for one sentence)."""
        spans = sentence_spans(message.get(TEXT) or "")
        if len(spans) < 2 or "danger" not in self.heads \
                or len(message.get(TEXT_TOKENS) or []) < self.config["sentence_message_tokens"]:
            return {}
        ensure_vector(message)  # the full head reads the sentences with their vectors
        rows = sentence_features(message, spans, min_tokens=self.config["sentence_min_tokens"])
        if rows is None:
            return {}
        return min(self._probabilities("danger", rows), key=lambda reading: reading.get(NONE, 1.0))

    def _settle_danger(self, message: Message, probabilities: Dict[str, float],
                       sentence: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
        """Decide the danger level and make the intent agree with it.

        ``probabilities`` is the head's reading of the whole message, ``sentence`` that of its most
        dangerous sentence (long messages). Urgent: the lexical net, a sure whole-message reading,
        a sure sentence, or an urgence_* intent the head does not reject."""
        p_whole = 1.0 - probabilities.get(NONE, 1.0)
        if sentence is None:
            sentence = self._sentence_danger(message) if p_whole >= self.config["sentence_whole_floor"] else {}
        intent = message.get(INTENT) or {}
        name = intent.get("name")
        p_sentence = 1.0 - sentence.get(NONE, 1.0) if sentence else 0.0
        reading = sentence if p_sentence > p_whole else probabilities
        p_danger = max(p_whole, p_sentence)
        reasons = {r: p for r, p in reading.items() if r != NONE}
        reason = max(reasons, key=reasons.get) if reasons else None
        lexical = REASON_BY_LEXICAL.get(lexical_danger_reason(message.get(TEXT)) or "")
        has_head = self.heads.get("danger") is not None
        level = NONE
        if lexical or p_whole >= self.config["urgent_threshold"] \
                or p_sentence >= self.config["sentence_urgent_threshold"]:
            level = "urgent"
            reason = lexical or (DANGER_BY_INTENT.get(name) if name in DANGER_BY_INTENT else reason)
        elif name in DANGER_BY_INTENT and has_head and p_whole < self.config["veto_threshold"]:
            self._replace_intent(message, self._best_other_intent(message))
            name = None
            if p_danger >= self.config["possible_threshold"]:
                level = "possible"
        elif name in DANGER_BY_INTENT:
            level, reason = "urgent", DANGER_BY_INTENT[name]
        elif p_danger >= self.config["possible_threshold"]:
            level = "possible"
        if level == "urgent" and name not in DANGER_BY_INTENT:
            self._replace_intent(message, {"name": INTENT_BY_DANGER[reason], "confidence": round(p_danger, 4)})
        return {"level": level, "reason": reason if level != NONE else None,
                "probability": round(p_danger, 4), "whole": round(p_whole, 4),
                "sentence": round(p_sentence, 4), "lexical": bool(lexical)}

    def _settle_elsewhere(self, message: Message, probability: float) -> float:
        """A question or report about another commune: the other_town intent (never our facts)."""
        name = (message.get(INTENT) or {}).get("name") or ""
        if probability >= self.config["elsewhere_threshold"] and name.startswith(_ANSWERS_WITH_OUR_FACTS) \
                and name not in DANGER_BY_INTENT:
            self._replace_intent(message, {"name": OTHER_TOWN, "confidence": round(probability, 4)})
        return round(probability, 4)

    @staticmethod
    def _best_other_intent(message: Message) -> Dict[str, Any]:
        for candidate in message.get("intent_ranking") or []:
            if candidate.get("name") not in DANGER_BY_INTENT:
                return dict(candidate)
        return {"name": "nlu_fallback", "confidence": 1.0}

    @staticmethod
    def _replace_intent(message: Message, intent: Dict[str, Any]) -> None:
        before = message.get(INTENT)
        ranking = [c for c in (message.get("intent_ranking") or []) if c.get("name") != intent["name"]]
        message.set(INTENT, intent, add_to_output=True)
        message.set("intent_ranking", [intent] + ranking, add_to_output=True)
        message.set("intent_before_signals", before, add_to_output=True)

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data
