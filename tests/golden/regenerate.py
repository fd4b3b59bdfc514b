"""Regenerate the pinned reference figures in this folder: ``python -m tests.golden.regenerate [NAME ...]``.

The figures are frozen on purpose: regenerate only when a change is *meant* to move them, review the
diff, and say in the commit message why each figure moved. Names: replay, study, run (default: all).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.golden.figures import FOLDER, replay_figures, run_figures, study_figures


def write(name: str, figures: dict) -> None:
    path = FOLDER / f"{name}.json"
    path.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(figures.get('figures', figures))} figures)")


def main(names: list[str]) -> int:
    import os
    import tempfile

    from programs.data import shared_data_dir

    # the run changes directory: resolve the shared data once, as the tests do
    os.environ.setdefault("SELFX_SHARED_DATA", str(shared_data_dir().resolve()))
    os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="selfx-dspy-cache-"))
    names = names or ["replay", "study", "run"]
    for name in names:
        if name == "replay":
            for model in ("llama3", "gpt4o"):
                for mode in ("compat", "corrected"):
                    write(f"replay_{model}_{mode}", replay_figures(model, mode))
        elif name == "study":
            write("study_smollm2", study_figures(Path(tempfile.mkdtemp())))
        elif name == "run":
            write("run_smollm2", run_figures(Path(tempfile.mkdtemp())))
        else:
            print(f"unknown name {name!r}; use replay, study or run", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

