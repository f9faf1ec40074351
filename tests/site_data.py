"""Data laid out as a deployment holds it: the coordinator's root (train and test
of every task) and each site's own root (train records only, a share each)."""

import json
import shutil
from pathlib import Path

from fcit_flower.config import RunConfig
from fcit_flower.tasks.data import data_root


def site_directories(
    tmp_path: Path, run_config: dict, sites: int = 2
) -> tuple[Path, list[Path]]:
    """Copy the run's mini-FCIT to a coordinator root and split its train records
    over ``sites`` site roots (site k: records k, k + sites, ...)."""
    source = data_root(RunConfig.from_mapping(run_config))
    coordinator = tmp_path / "coordinator" / "data"
    shutil.copytree(source, coordinator)
    roots = []
    for site in range(sites):
        root = tmp_path / f"site-{site}" / "data"
        shutil.copytree(source / "images", root / "images")
        for folder in source.iterdir():
            if (folder / "train.json").is_file():
                train = json.loads((folder / "train.json").read_text())
                (root / folder.name).mkdir()
                (root / folder.name / "train.json").write_text(
                    json.dumps(train[site::sites])
                )
        roots.append(root)
    return coordinator, roots
