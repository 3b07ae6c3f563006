"""``run_scenario.py linkrate``: the table and figure of a link's rate against distance, its
errors, and the calibration table of docs/link-models.md, which must be the one the code
computes (each model rate recomputed here, each within a factor of 2 of the published one)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

import run_scenario
from nodes.network import CALIBRATION, PRESETS, DecoyBB84
from nodes.run.linkrate import calibration_markdown, distances, format_rate, plain

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "link-models.md"
TABLE = re.compile(r"<!-- calibration-table -->\n(.*?)<!-- /calibration-table -->", re.S)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def linkrate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run_scenario.py"), "linkrate", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The same command in this process (faster than a subprocess): exit code, out, err."""
    try:
        code = run_scenario.main(["linkrate", *args])
    except SystemExit as stop:  # argparse's own usage errors
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def doc_table() -> str:
    found = TABLE.search(DOC.read_text(encoding="utf-8"))
    assert found, f"{DOC} has no <!-- calibration-table --> section"
    return found.group(1)


def doc_rows() -> list[dict[str, str]]:
    lines = [line for line in doc_table().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["preset", "distance km", "loss dB", "published bit/s", "model bit/s",
                      "ratio", "source"]
    assert set(lines[1]) <= set("|-: ")
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split(" | "))))
            for line in lines[2:]]


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


# -- the CLI -------------------------------------------------------------------------------


def test_a_preset_prints_its_table_and_cutoff_and_draws_the_figure(tmp_path: Path) -> None:
    done = linkrate("--preset", "toshiba_dixon_2008", "--out", "figs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "decoy_bb84 model: toshiba_dixon_2008"
    header = lines.index(next(line for line in lines if line.split()[:2] == ["km", "loss"]))
    assert lines[header].split() == ["km", "loss", "dB", "QBER", "%", "key", "rate"]
    rows = [line.split() for line in lines[header + 2:] if line.strip()[:1].isdigit()]
    model = PRESETS["toshiba_dixon_2008"].model
    cutoff = model.cutoff_km()
    assert [float(row[0]) for row in rows] == distances(10 * math.ceil(1.1 * cutoff / 10), 10)
    at_20 = next(row for row in rows if row[0] == "20")
    assert at_20[1:] == ["4.2", f"{100 * model.qber(20):.2f}", "1.29", "Mbit/s"]
    assert rows[-1][-2:] == ["0", "bit/s"]
    assert f"cutoff: {cutoff:.1f} km" in done.stdout
    figure = tmp_path / "figs" / "rate_vs_distance.png"
    assert figure.read_bytes()[:8] == PNG_MAGIC
    assert f"figure: {Path('figs') / 'rate_vs_distance.png'}" in done.stdout


def test_params_override_the_defaults_and_compare_draws_the_same_bytes_twice(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--param", "loss_extra_db=3", "--param", "mu=0.6", "--max-km", "60",
            "--step-km", "20", "--compare")
    code, out, err = cli(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert cli(capsys, *args, "--out", str(tmp_path / "b"))[0] == 0
    model = DecoyBB84(loss_extra_db=3, mu=0.6)
    assert "defaults (GYS set at 1 GHz) with loss_extra_db=3, mu=0.6" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["0", "20", "40", "60"]
    assert rows[-1] == ["60", "15.6", f"{100 * model.qber(60):.2f}",
                        *format_rate(model.rate_bps(60)).split()]
    assert (tmp_path / "a" / "rate_vs_distance.png").read_bytes() == \
        (tmp_path / "b" / "rate_vs_distance.png").read_bytes()


@pytest.mark.parametrize("args, named", [
    (("--preset", "nosuch"), "--preset nosuch: unknown preset (known: gys_2005, "),
    (("--param", "nosuch=1"), "--param nosuch: unknown parameter (known: pulse_rate_hz, "),
])
def test_bad_input_exits_2_naming_it_without_a_traceback(
        tmp_path: Path, args: tuple[str, ...], named: str) -> None:
    done = linkrate(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert named in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args, named", [
    (("--param", "mu=abc"), "--param mu: 'abc' is not a number"),
    (("--param", "mu"), "--param 'mu': expected NAME=VALUE"),
    (("--param", "sifting=2"), "--param sifting: Input should be less than or equal to 1"),
    (("--max-km", "-5"), "--max-km -5: must be above 0"),
    (("--step-km", "0"), "--step-km 0: must be above 0"),
    (("--model", "bb84"), "argument --model: invalid choice: 'bb84'"),
    (("--preset", "gys_2005", "--model", "decoy_bb84"), "not allowed with argument --preset"),
])
def test_every_bad_value_is_named_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
        named: str) -> None:
    code, out, err = cli(capsys, *args, "--out", str(tmp_path / "out"))
    assert (code, out) == (2, "")
    assert named in err
    assert not (tmp_path / "out").exists()


def test_format_rate_is_three_significant_digits_in_a_readable_unit() -> None:
    assert [format_rate(x) for x in (0, 0.5, 246.4, 999.96, 1294e3, 27.4e6, 2.5e9)] == [
        "0 bit/s", "0.5 bit/s", "246 bit/s", "1 kbit/s", "1.29 Mbit/s", "27.4 Mbit/s",
        "2.5 Gbit/s"]
    assert [plain(x) for x in (17201196.6, 7.5858, 10797.99, 0.012345)] == [
        "17,200,000", "7.59", "10,800", "0.0123"]


# -- the calibration table of docs/link-models.md -------------------------------------------


def test_the_docs_calibration_table_is_the_one_the_code_computes(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "--calibration") == (0, calibration_markdown(), "")
    assert doc_table() == calibration_markdown(), (
        "docs/link-models.md is stale: paste `python run_scenario.py linkrate --calibration` "
        "between its calibration-table markers")


def test_each_doc_row_recomputes_to_its_model_column_within_a_factor_of_2() -> None:
    rows = doc_rows()
    assert sorted((r["preset"], number(r["distance km"])) for r in rows) == sorted(
        (p.preset, float(p.length_km)) for p in CALIBRATION)
    for row in rows:
        model = PRESETS[row["preset"]].model
        km = number(row["distance km"])
        published, shown = number(row["published bit/s"]), number(row["model bit/s"])
        rate = model.rate_bps(km)
        # three significant digits: within half a unit of the third digit
        assert abs(shown - rate) <= 0.5 * 10 ** (math.floor(math.log10(rate)) - 2), row
        assert number(row["loss dB"]) == round(model.alpha_db_per_km * km
                                               + model.loss_extra_db, 1), row
        assert number(row["ratio"]) == round(rate / published, 2), row
        assert 0.5 <= shown / published <= 2.0, row
        assert row["source"].startswith(PRESETS[row["preset"]].source.split(":")[0]), row


def test_the_doc_shows_the_compare_figure() -> None:
    assert "](img/rate_vs_distance.png)" in DOC.read_text(encoding="utf-8")
    assert (DOC.parent / "img" / "rate_vs_distance.png").read_bytes()[:8] == PNG_MAGIC
