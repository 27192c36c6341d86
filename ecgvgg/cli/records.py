"""``ecgvgg prepare`` and ``ecgvgg download``: from PhysioNet's WFDB records to a beats table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgvgg.core.errors import ConfigError
from ecgvgg.cli.exits import guard
from ecgvgg.cli.report import console, err_console


def prepare(
    ctx: typer.Context,
    records_dir: Annotated[Path, typer.Argument(help="Folder of WFDB records (.hea/.dat/.atr).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output beats file (.parquet or .csv).")],
    method: Annotated[str, typer.Option(help="kachuee (125 Hz, 1.2 x median RR, 187 samples) or window.")] = "kachuee",
    channel: Annotated[
        str, typer.Option(help="Signal name to use; a record without it uses MLII, else ECG1, else its first signal.")
    ] = "MLII",
    leads: Annotated[
        Optional[str],
        typer.Option(
            help="Leads to cut, one channel each, e.g. MLII,V1 (stand-ins by "
            "database: ECG1/ECG2 in SVDB, V2/V4/V5 for V1); "
            "replaces --channel."
        ),
    ] = None,
    reference: Annotated[
        str,
        typer.Option(
            help="Each lead's reference beat as ref* columns: none; record (the "
            "median beat of the record); causal (running median of the "
            "preceding --reference-window seconds)."
        ),
    ] = "none",
    reference_window: Annotated[float, typer.Option(help="causal reference: seconds of past beats.")] = 300.0,
    annotator: Annotated[str, typer.Option(help="Extension of the beat annotation files, e.g. atr.")] = "atr",
    before: Annotated[float, typer.Option(help="window: seconds before the R peak.")] = 0.25,
    after: Annotated[float, typer.Option(help="window: seconds after the R peak.")] = 0.45,
    rate: Annotated[float, typer.Option(help="window: sampling rate of the cut beats in Hz.")] = 125.0,
    bandpass: Annotated[Optional[str], typer.Option(help="Band-pass filter LOW,HIGH in Hz, e.g. 0.5,40.")] = None,
    scale: Annotated[
        str,
        typer.Option(
            help="none; record: each record divided by its median R-peak height; window: each 10 s scaled to [0, 1] (as kachuee)."
        ),
    ] = "none",
) -> None:
    """Cut annotated beats from WFDB records into one row per beat with label, record and sample columns."""
    from rich.progress import Progress

    from ecgvgg.core.files import check_out, write_table
    from ecgvgg.core.records import prepare_records

    with guard(ctx.obj):
        if method not in ("kachuee", "window"):
            raise ConfigError(f"--method {method!r}: choose kachuee or window")
        if scale not in ("none", "record", "window"):
            raise ConfigError(f"--scale {scale!r}: choose none, record or window")
        if not (rate > 0 and before >= 0 and after > 0):
            raise ConfigError("--rate and --after must be > 0 and --before >= 0")
        if reference not in ("none", "record", "causal"):
            raise ConfigError(f"--reference {reference!r}: choose none, record or causal")
        if not reference_window > 0:
            raise ConfigError("--reference-window must be > 0 seconds")
        lead_list = [lead.strip() for lead in leads.split(",")] if leads else None
        if lead_list is not None and (not all(lead_list) or len(set(lead_list)) != len(lead_list)):
            raise ConfigError(f"--leads {leads!r}: expected distinct lead names separated by commas, e.g. MLII,V1")
        check_out(out)
        band = _band(bandpass)
        n = len(list(records_dir.glob("*.hea"))) if records_dir.is_dir() else 0
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("records", total=n)
            beats, report = prepare_records(
                records_dir,
                method=method,
                channel=channel,
                leads=lead_list,
                reference=reference,
                reference_window=reference_window,
                annotator=annotator,
                filter_band=band,
                before=before,
                after=after,
                rate=rate,
                scale=scale,
                on_record=lambda name: progress.update(task, advance=1, description=f"record {name}"),
            )
        write_table(beats, out)
    console.print(f"wrote {out}: {report.summary()}")
    for name, why in report.skipped_records.items():
        err_console.print(f"[yellow]skipped record {name}:[/] {why}")


#: PhysioNet databases ``download`` knows: name -> (PhysioNet folder, title).
DATABASES = {
    "mitdb": ("mitdb/1.0.0", "MIT-BIH Arrhythmia Database"),
    "svdb": ("svdb/1.0.0", "MIT-BIH Supraventricular Arrhythmia Database"),
}


def download(
    ctx: typer.Context,
    database: Annotated[str, typer.Argument(help="mitdb or svdb.")],
    out: Annotated[Path, typer.Argument(help="Folder to write the records to (created).")],
    mirror: Annotated[str, typer.Option(help="Base address of the PhysioNet files.")] = "https://physionet.org/files/",
) -> None:
    """Download a PhysioNet database's WFDB records (.hea/.dat/.atr) with wfdb, e.g. ecgvgg download mitdb mitdb/."""
    with guard(ctx.obj):
        if database not in DATABASES:
            raise ConfigError(f"DATABASE {database!r}: choose {' or '.join(DATABASES)}")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"OUT {out}: is a file; give a folder")
        folder, title = DATABASES[database]
        import wfdb
        from wfdb.io import download as wfdb_download

        wfdb_download.set_db_index_url(mirror)
        try:
            wfdb.dl_database(folder.split("/")[0], dl_dir=str(out))
        except Exception as exc:  # noqa: BLE001 - offline, a proxy, a moved file: say where to get them by hand
            from ecgvgg.core.errors import DataError

            raise DataError(
                f"cannot download {database} from {mirror} ({type(exc).__name__}); get the {title} by "
                f"hand from https://physionet.org/content/{folder}/ into {out}"
            ) from None
        finally:
            wfdb_download.set_db_index_url()
    console.print(f"wrote the {title} to {out}; cut its beats with: ecgvgg prepare {out} -o {database}_beats.parquet")


def _band(bandpass: Optional[str]) -> Optional[tuple[float, float]]:
    """``--bandpass LOW,HIGH`` as two numbers, or None."""
    if not bandpass:
        return None
    try:
        low, high = (float(v) for v in bandpass.split(","))
    except ValueError:
        raise ConfigError(f"--bandpass {bandpass!r}: expected LOW,HIGH in Hz") from None
    return low, high
