"""Where a local project keeps things: the deployed stack's bucket layout, under one folder.

``<project>/unlabeled/<storage.unlabeled_prefix>`` holds the imported frames (as the unlabeled bucket holds
uploads), ``<project>/data/`` what the data bucket holds (batches, datasets, labeling, models), and
``<project>/imports/`` one report per import (every file's outcome).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alp.settings import Settings

DEFAULT_PROJECT_DIR = Path("alp-project")


@dataclass(frozen=True)
class ProjectPaths:
    root: Path
    unlabeled_prefix: str

    @classmethod
    def of(cls, root: Path, settings: Settings) -> ProjectPaths:
        return cls(root=root.resolve(), unlabeled_prefix=settings.storage.unlabeled_prefix)

    @property
    def incoming(self) -> Path:
        """Imported frames: the unlabeled bucket's upload prefix."""
        return self.root / "unlabeled" / self.unlabeled_prefix

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def imports(self) -> Path:
        return self.root / "imports"
