"""A Processing feedback that keeps a run's messages, to read the core's JSON summary the algorithm logs."""

from __future__ import annotations

import json

from qgis.core import QgsProcessingFeedback


class SummaryFeedback(QgsProcessingFeedback):
    """Keeps the messages of a run; :meth:`summary` is the logged JSON summary that has ``key``
    (``accuracy`` for Align Image Pair's, ``inputs`` for Coregister Stack's)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.messages: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS API)
        self.messages.append(info)
        super().pushInfo(info)

    def summary(self) -> dict:
        return next(json.loads(m) for m in self.messages if m.startswith("{") and f'"{self.key}"' in m)
