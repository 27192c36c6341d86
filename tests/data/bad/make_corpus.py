"""Regenerate the bad-input corpus from a few real beats of the bundled MIT-BIH sample.

Run from the repository root: python tests/data/bad/make_corpus.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ecgvgg import sample_path

HERE = Path(__file__).parent


def rows(n_per_class: int = 3) -> pd.DataFrame:
    """A few real beats of every class, rounded to 4 decimals to keep the files small."""
    df = pd.read_parquet(sample_path())
    pick = df.groupby("label", group_keys=False).head(n_per_class).reset_index(drop=True)
    beats = pick.filter(like="x").round(4)
    beats["label"] = pick["label"].astype(float)
    return beats


def kaggle_lines(df: pd.DataFrame) -> list[str]:
    return [",".join(f"{v:g}" for v in row) for row in df.to_numpy()]


def write(name: str, lines: list[str]) -> None:
    (HERE / name).write_text("\n".join(lines) + "\n")


def main() -> None:
    df = rows()
    good = kaggle_lines(df)
    (HERE / "empty.csv").write_text("")
    write("header_in_headerless.csv", [",".join(df.columns)] + good)
    ragged = good.copy()
    ragged[4] = ragged[4].rsplit(",", 2)[0] + "," + ragged[4].rsplit(",", 1)[1]  # drop one sample
    write("ragged.csv", ragged)
    bad = good.copy()
    cells = bad[5].split(",")
    cells[10] = "abc"
    bad[5] = ",".join(cells)
    write("non_numeric.csv", bad)
    for name, token in (("nan.csv", "nan"), ("inf.csv", "inf")):
        lines = good.copy()
        cells = lines[2].split(",")
        cells[7] = token
        lines[2] = ",".join(cells)
        write(name, lines)
    for name, label in (("label_7.csv", "7"), ("label_1_5.csv", "1.5")):
        lines = good.copy()
        lines[3] = lines[3].rsplit(",", 1)[0] + "," + label
        write(name, lines)
    one = df[df.label == 0]
    write("one_class.csv", kaggle_lines(one))
    X = df.drop(columns="label")
    write("x_short.csv", kaggle_lines(X.iloc[:-1]))
    write("y_long.csv", [f"{v:g}" for v in df["label"]])
    df.drop(columns="label").to_parquet(HERE / "no_label.parquet", index=False)
    write("labels_0_to_4.csv", good)  # valid data, used with a config that names only three classes


if __name__ == "__main__":
    main()
