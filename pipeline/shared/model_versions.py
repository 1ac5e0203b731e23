"""A folder of model versions (predict.model_watch_dir): a new model without a restart.

Each sub-folder is one version, as tools.train writes it: model.onnx, model_card.json and, for
reasons, model.txt. Versions are ordered by their folder names (name them so that they sort:
`2026-12-05T10-00`, `v0007`); the newest that passes every check of pipeline.shared.model_check
(its card and sha256, its feature set, a probe batch, its trees) scores. A version that fails is
refused once, logged, and never tried again; the running model goes on.
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any, NamedTuple

from apache_beam.io.filesystems import FileSystems

from pipeline.shared import model_check
from pipeline.shared.errors import ConfigError
from pipeline.shared.model_card import CARD_NAME


class Version(NamedTuple):
    name: str
    model_path: str
    card: dict[str, Any]

    @property
    def version(self) -> str:
        """What a record scored by it is stamped with: its card's model_version, or the folder's name."""
        return str(self.card.get("model_version") or self.name)


MODEL_FILE = "model.onnx"
# Versions that passed the checks in this process: a version's files never change (a new model is
# a new folder), so each is checked once however many scorers look.
_CHECKED: dict[tuple[str, str], Version] = {}
_LOG = logging.getLogger(__name__)


def listed(folder: str) -> list[tuple[str, str]]:
    """(name, model path) of every sub-folder with a model card, in name order."""
    pattern = FileSystems.join(folder, "*", CARD_NAME)
    found = []
    for match in FileSystems.match([pattern])[0].metadata_list:
        version_dir = posixpath.dirname(match.path.replace("\\", "/"))
        found.append((posixpath.basename(version_dir), FileSystems.join(version_dir, MODEL_FILE)))
    return sorted(found)


def newest_valid(
    folder: str, feature_set: str | None, after: str, refused: set[str]
) -> tuple[Version | None, list[str]]:
    """The newest version named after `after` that passes the checks (and, given `feature_set`,
    computes from those features), and the versions refused on the way (added to `refused`)."""
    newly_refused: list[str] = []
    for name, model_path in reversed(listed(folder)):
        if name <= after:
            break
        if name in refused:
            continue
        if (name, model_path) in _CHECKED:
            return _CHECKED[(name, model_path)], newly_refused
        try:
            card = model_check.check_model(model_path)
            if card is None:
                raise ConfigError(f"predict.model: {model_path} has no {CARD_NAME}")
            named = model_check.feature_set(card)
            if feature_set is not None and named != feature_set:
                raise ConfigError(
                    f"predict.model: {model_path} takes feature set {named}, the running job computes {feature_set}"
                )
        except ConfigError as exc:
            refused.add(name)
            newly_refused.append(name)
            _LOG.warning("model version %s in %s refused, the running model goes on: %s", name, folder, exc)
            continue
        _CHECKED[(name, model_path)] = version = Version(name, model_path, card)
        return version, newly_refused
    return None, newly_refused
