"""``samplerlab speech eval``: PESQ, STOI, ESTOI, SI-SDR (and the optional metrics) against clean references."""

from __future__ import annotations

import json
from pathlib import Path

from .common import add_no_progress, csv_list, json_file


def add_parser(sub) -> None:
    se = sub.add_parser("eval", help="PESQ, STOI, ESTOI, SI-SDR against clean references: mean ± std")
    se.add_argument("--clean", required=True, help="folder of clean references (matched by file name)")
    se.add_argument("--enhanced", help="folder of enhanced files")
    se.add_argument("--noisy", help="folder of noisy inputs (the baseline)")
    se.add_argument(
        "--metrics",
        help="comma-separated subset of pesq,stoi,estoi,si_sdr,warpq,dnsmos_sig,dnsmos_bak,"
        "dnsmos_ovrl,dnsmos_p808 (default: all that run here)",
    )
    se.add_argument(
        "--dnsmos",
        metavar="DIR",
        help="folder with the DNSMOS P.835 model (sig_bak_ovr.onnx; optional "
        "calibration.json, and model_v8.onnx for P.808) for the dnsmos_* "
        "scores; none is downloaded",
    )
    se.add_argument("--out", type=json_file, help="JSON file for the figures")
    add_no_progress(se)
    se.set_defaults(func=run)


def run(args) -> int:
    from ..io import atomic_write_text
    from ..metrics.dnsmos import DNSMOS, bundled_model_dir
    from ..metrics.speech import available_metrics
    from ..speech.scoring import format_scores, score_folders, scores_to_json

    dnsmos = None
    if args.dnsmos or bundled_model_dir() is not None:  # a folder given, or the models speechmos ships
        dnsmos = DNSMOS(args.dnsmos or None)
    which = csv_list(args.metrics) if args.metrics else list(available_metrics(dnsmos))
    if not args.metrics:
        if "warpq" not in which:
            print("WARP-Q skipped: it is an optional extra (pip install 'samplerlab[warpq]')")
        if dnsmos is None:
            print("DNSMOS skipped: pip install speechmos (it ships the DNS Challenge's models), or --dnsmos DIR")
        elif dnsmos.calibration is None:
            print(f"DNSMOS P.835 skipped: {dnsmos.model_path} is not the official model and has no calibration.json")
    rows = score_folders(
        args.clean,
        {"noisy": args.noisy, "enhanced": args.enhanced},
        which,
        dnsmos=dnsmos,
        progress=not args.no_progress,
    )
    if not rows:
        raise ValueError("give --enhanced DIR and / or --noisy DIR to compare with --clean DIR")
    print(format_scores(rows, which))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(scores_to_json(rows), indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
