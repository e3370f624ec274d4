"""The recipe files (hf_token_prune/recipes/<name>.json): one of the paper's settings as flag values, its source and
the flags it requires."""

import json
from pathlib import Path


RECIPES = Path(__file__).resolve().parent.parent / "recipes"
# In a clone of the repository, a recipe's relative data paths (the demo's data/keywords) are read from its root.
REPO = Path(__file__).resolve().parent.parent.parent


def available_recipes():
    return sorted(path.stem for path in RECIPES.glob("*.json"))


def read_recipe(name):
    """A recipe file; relative paths in its arguments are read from the repository's root when it is there."""
    path = RECIPES / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"unknown recipe {name!r}: choose one of {', '.join(available_recipes())}.")
    recipe = json.loads(path.read_text())
    data_dir = recipe["arguments"].get("data_dir")
    if data_dir and not Path(data_dir).is_absolute() and (REPO / data_dir).is_dir():
        recipe["arguments"]["data_dir"] = str(REPO / data_dir)
    return recipe
