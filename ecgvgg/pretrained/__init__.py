"""The model packaged with ecgvgg (``mitbih_vgg.keras``), and how a trained model becomes it.

    python -m ecgvgg.pretrained mlruns/runs/RUN_ID/model.keras

writes the run's network, without its optimizer state, with its input contract (and the baseline it
blends, if any), as the packaged model (see pipelines/pretrained_vgg.yaml and docs/pretrained.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The packaged model file.
MODEL = Path(__file__).resolve().parent / "mitbih_vgg.keras"
#: The largest packaged model accepted, in bytes.
MAX_BYTES = 5 * 1024 * 1024


def package(source: str | Path, dest: str | Path = MODEL) -> Path:
    """Save ``source`` (a ``.keras`` file: network, contract, any blended baseline) without optimizer state at ``dest``."""
    import keras

    from ecgvgg.core.inference import load_model, save_model

    loaded = load_model(source)
    bare = keras.Model.from_config(loaded.model.get_config())
    bare.set_weights(loaded.model.get_weights())
    save_model(bare, dest, loaded.contract, loaded.baseline)
    size = Path(dest).stat().st_size
    if size > MAX_BYTES:
        Path(dest).unlink()
        raise ValueError(
            f"{dest}: {size / 2**20:.1f} MB, more than the {MAX_BYTES / 2**20:.0f} MB a packaged model "
            "may take; train a smaller network (model.width, model.dense_units)"
        )
    return Path(dest)


def main(argv: list[str] | None = None) -> int:
    """``python -m ecgvgg.pretrained MODEL.keras [DEST]``."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = package(*args)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MB)")
    return 0
