"""Records round-trip, summary numbers by hand, the errors that guard comparisons, table and plots."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from rich.console import Console

from eval import records as records_module
from eval.plot import plot_over_steps, plot_passk_curves
from eval.records import Record, append_records, done_keys, read_records
from eval.summarize import Summary, SummaryError, format_table, load_summary, summarize, table_ks, write_summary


def _rec(model: str, problem_id: str, correct: int, n: int = 4) -> Record:
    step = None if model == "base" else int(model.split("_")[1])
    return Record(model=model, step=step, path=f"/ckpt/{model}", problem_id=problem_id, n=n, correct=correct)


# n = 4 samples on two problems. By hand, pass@k = 1 - C(4 - c, k) / C(4, k):
#   c = 0: 0, 0, 0   c = 1: 1/4, 1/2, 1   c = 2: 1/2, 5/6, 1   c = 4: 1, 1, 1   (k = 1, 2, 4)
# base     (p1: 1, p2: 0) -> pass@1 1/8,  pass@2 1/4,  pass@4 1/2
# step 10  (p1: 4, p2: 1) -> pass@1 5/8,  pass@2 3/4,  pass@4 1;    ΔSE = 1/2 - 5/8 = -1/8
# step 50  (p1: 2, p2: 0) -> pass@1 1/4,  pass@2 5/12, pass@4 1/2;  ΔSE = 1/2 - 1/4 = 1/4
HAND_RECORDS = [
    _rec("step_50", "p1", 2),
    _rec("base", "p2", 0),
    _rec("step_10", "p2", 1),
    _rec("step_50", "p2", 0),
    _rec("base", "p1", 1),
    _rec("step_10", "p1", 4),
]


# --- records ----------------------------------------------------------------------------------


def test_records_round_trip_and_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = records_module.os.fsync
    monkeypatch.setattr(records_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    path = tmp_path / "sub" / "records.jsonl"
    append_records(path, HAND_RECORDS[:4])
    append_records(path, HAND_RECORDS[4:])
    append_records(path, [])  # nothing to write: no empty line, no sync
    assert read_records(path) == HAND_RECORDS
    assert len(synced) == 2
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    assert json.loads(lines[0]) == {
        "model": "step_50", "step": 50, "path": "/ckpt/step_50", "problem_id": "p1", "n": 4, "correct": 2,
        "task": "", "problem_hash": "", "tags": {},
    }
    assert json.loads(lines[1])["step"] is None


def test_truncated_last_line_is_skipped_then_repaired(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_records(path, HAND_RECORDS[:3])
    with path.open("a") as f:
        f.write('{"model": "step_10", "step": 10, "pa')  # a crash mid-write
    with pytest.warns(UserWarning, match=r"records\.jsonl:4: skipping a truncated last line"):
        assert read_records(path) == HAND_RECORDS[:3]

    # Resuming: the torn line is cut off before new records are appended, not glued onto.
    with pytest.warns(UserWarning, match="dropping a truncated last line"):
        append_records(path, HAND_RECORDS[3:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_records(path) == HAND_RECORDS
    assert len(path.read_text().splitlines()) == 6


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    record = {"model": "base", "step": None, "path": "/b", "problem_id": "p1", "n": 4, "correct": 1}
    path.write_text(json.dumps(record))
    append_records(path, [_rec("base", "p2", 3)])
    assert [(r.problem_id, r.correct) for r in read_records(path)] == [("p1", 1), ("p2", 3)]


@pytest.mark.parametrize(
    "bad_line",
    [
        "not json at all",
        '{"model": "base", "step": null}',  # missing fields
        '{"model": "base", "step": null, "path": "/b", "problem_id": "p9", "n": 4, "correct": 5}',  # c > n
        '{"model": "base", "step": null, "path": "/b", "problem_id": "p9", "n": "4", "correct": 1}',  # str n
    ],
)
def test_malformed_line_in_the_middle_raises(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "records.jsonl"
    append_records(path, HAND_RECORDS[:1])
    with path.open("a") as f:  # raw writes: append_records would drop a bad last line first
        f.write(bad_line + "\n")
        f.write(json.dumps(asdict(HAND_RECORDS[1])) + "\n")
    with pytest.raises(ValueError, match=r"records\.jsonl:2: malformed record in the middle"):
        read_records(path)


def test_duplicates_later_wins_and_done_keys(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_records(path, HAND_RECORDS)
    append_records(path, [_rec("base", "p2", 4)])  # base re-measured on p2
    records = read_records(path)
    assert len(records) == 6
    assert [r.correct for r in records if r.model == "base" and r.problem_id == "p2"] == [4]
    assert done_keys(records) == {(m, p): "" for m in ("base", "step_10", "step_50") for p in ("p1", "p2")}
    # summarize sees the later record: base pass@1 = (1/4 + 4/4) / 2
    assert summarize(records)["base"]["pass_at_k"][1] == pytest.approx(0.625)


def test_record_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="0 <= correct <= n"):
        _rec("base", "p1", 5)
    with pytest.raises(ValueError, match="step must be None"):
        Record("step_x", -1, "/x", "p1", 4, 1)


# --- summarize --------------------------------------------------------------------------------


def test_summarize_hand_computed() -> None:
    summary = summarize(HAND_RECORDS)
    assert (summary["n"], summary["k_max"], summary["num_problems"]) == (4, 4, 2)
    assert summary["base"]["path"] == "/ckpt/base"
    assert summary["base"]["pass_at_k"] == pytest.approx({1: 1 / 8, 2: 1 / 4, 4: 1 / 2})
    assert [c["step"] for c in summary["checkpoints"]] == [10, 50]  # ordered by step, not by input
    step10, step50 = summary["checkpoints"]
    assert (step10["model"], step10["path"]) == ("step_10", "/ckpt/step_10")
    assert step10["pass_at_k"] == pytest.approx({1: 5 / 8, 2: 3 / 4, 4: 1.0})
    assert step50["pass_at_k"] == pytest.approx({1: 1 / 4, 2: 5 / 12, 4: 1 / 2})
    assert step10["delta_se"] == pytest.approx(-1 / 8)
    assert step50["delta_se"] == pytest.approx(1 / 4)


def test_summarize_k_max_and_non_power_of_two_n() -> None:
    summary = summarize(HAND_RECORDS, k_max=2)
    assert summary["k_max"] == 2 and sorted(summary["base"]["pass_at_k"]) == [1, 2]
    # ΔSE = base pass@2 - pass@1
    assert [c["delta_se"] for c in summary["checkpoints"]] == pytest.approx([1 / 4 - 5 / 8, 1 / 4 - 1 / 4])
    with pytest.raises(SummaryError, match="k_max must be between 1 and n = 4"):
        summarize(HAND_RECORDS, k_max=8)

    # n = 3: k = 1, 2, 3; c = 1 gives 1/3, 1 - C(2,2)/C(3,2) = 2/3, 1
    three = summarize([_rec("base", "p1", 1, n=3), _rec("step_5", "p1", 3, n=3)])
    assert three["base"]["pass_at_k"] == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
    assert three["checkpoints"][0]["delta_se"] == pytest.approx(0.0)


def test_summary_json_round_trip_restores_int_keys(tmp_path: Path) -> None:
    summary = summarize(HAND_RECORDS)
    path = write_summary(summary, tmp_path / "out" / "summary.json")
    assert json.loads(path.read_text())["base"]["pass_at_k"]["4"] == pytest.approx(0.5)
    loaded = load_summary(path)
    assert loaded == summary
    assert all(isinstance(k, int) for c in loaded["checkpoints"] for k in c["pass_at_k"])


def test_mismatched_problems_raise() -> None:
    partial = [r for r in HAND_RECORDS if not (r.model == "step_50" and r.problem_id == "p2")]
    missing_p2 = r"'step_50' was measured on 1 problems.*1 missing \(e\.g\. \['p2'\]\)"
    with pytest.raises(SummaryError, match=missing_p2):
        summarize(partial)
    extra = [*HAND_RECORDS, _rec("step_10", "p3", 1)]
    with pytest.raises(SummaryError, match=r"'step_10'.*1 extra \(e\.g\. \['p3'\]\)"):
        summarize(extra)


def test_missing_or_extra_base_raises() -> None:
    no_base = [r for r in HAND_RECORDS if r.model != "base"]
    with pytest.raises(SummaryError, match=r"exactly one base.*found 0: \[\].*\['step_10', 'step_50'\]"):
        summarize(no_base)
    renamed = [dataclasses.replace(r, model="base_a") if r.model == "base" else r for r in HAND_RECORDS]
    two_bases = [*renamed, *(Record("base_b", None, "/other", p, 4, 0) for p in ("p1", "p2"))]
    with pytest.raises(SummaryError, match=r"found 2: \['base_a', 'base_b'\]"):
        summarize(two_bases)
    # a model named "base" is the base; other models without a step are compared with it (model pairs)
    pair = summarize([*HAND_RECORDS, *(Record("other", None, "/other", p, 4, 0) for p in ("p1", "p2"))])
    assert pair["base"]["model"] == "base" and [c["model"] for c in pair["checkpoints"]] == ["step_10", "step_50", "other"]
    with pytest.raises(SummaryError, match="no records"):
        summarize([])


def test_inconsistent_n_raises() -> None:
    mixed_within = [*HAND_RECORDS[:-1], _rec("step_10", "p1", 4, n=8)]
    with pytest.raises(SummaryError, match=r"'step_10' has records with different n.*\[4, 8\]"):
        summarize(mixed_within)
    other_n = [r if r.model != "step_50" else _rec("step_50", r.problem_id, r.correct, n=8) for r in HAND_RECORDS]
    with pytest.raises(SummaryError, match="different n.*step_50: 8"):
        summarize(other_n)


def test_one_model_name_for_two_folders_raises() -> None:
    clash = [*HAND_RECORDS[:-1], Record("step_10", 10, "/elsewhere/step_10", "p1", 4, 4)]
    with pytest.raises(SummaryError, match="'step_10' has records with different \\(step, path\\)"):
        summarize(clash)


# --- table and plots --------------------------------------------------------------------------


def _render(summary: Summary, width: int = 100) -> tuple[list[str], list[str], list[list[str]]]:
    """The printed table as (all lines, header cells, row cells)."""
    console = Console(width=width, record=True, color_system=None)
    console.print(format_table(summary))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    rows = [line for line in lines if line.startswith("│")]
    return lines, _cells(header, "┃"), [_cells(row, "│") for row in rows]


def _cells(line: str, bar: str) -> list[str]:
    return [cell.strip() for cell in line.strip(bar).split(bar)]


def test_table_rows_in_percent() -> None:
    _, header, rows = _render(summarize(HAND_RECORDS))
    assert header == ["model", "pass@1", "pass@2", "pass@4", "ΔSE"]
    # base first, then checkpoints by step; ΔSE in points. Beneath each figure its interval: with two problems
    # a resample holds p1 twice, both, or p2 twice, so the 95% interval runs from one extreme to the other.
    assert rows == [
        ["base", "12.5", "25.0", "50.0", "-"],
        ["", "[0, 25]", "[0, 50]", "[0, 100]", ""],
        ["step_10", "62.5", "75.0", "100.0", "-12.5"],
        ["", "[25, 100]", "[50, 100]", "[100, 100]", "[-25, +0]"],
        ["step_50", "25.0", "41.7", "50.0", "+25.0"],
        ["", "[0, 50]", "[0, 83]", "[0, 100]", "[+0, +50]"],
    ]


def test_table_fits_100_columns_with_many_k() -> None:
    assert table_ks([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]) == [1, 8, 64, 512, 1024]
    assert table_ks([1, 2, 4, 8, 16, 32, 64, 128, 256]) == [1, 4, 16, 64, 256]
    assert table_ks([1, 2, 4, 8, 16, 32, 64, 100]) == [1, 4, 16, 64, 100]
    assert table_ks([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]) == [1, 8, 64, 512, 2048]
    models = [("base", None), ("step_000050", 50)]
    many = [Record(m, s, f"/{m}", f"p{i}", 1024, 3 * i) for m, s in models for i in range(5)]
    lines, header, rows = _render(summarize(many))
    assert max(len(line) for line in lines) <= 100
    assert header == ["model", "pass@1", "pass@8", "pass@64", "pass@512", "pass@1024", "ΔSE"]
    assert rows[0][0] == "base" and rows[2][0] == "step_000050"  # names not cut


def _synthetic_summary(num_checkpoints: int) -> Summary:
    rng = np.random.default_rng(0)
    records = [Record("base", None, "/base", f"p{i}", 64, int(rng.integers(0, 40))) for i in range(20)]
    for step in range(10, 10 * num_checkpoints + 1, 10):
        correct = rng.integers(0, 64, size=20)
        records += [Record(f"step_{step}", step, f"/s{step}", f"p{i}", 64, int(c)) for i, c in enumerate(correct)]
    return summarize(records)


@pytest.mark.parametrize("num_checkpoints", [1, 4, 14])  # 14: colour bar instead of a long legend
def test_plots_write_png_images(tmp_path: Path, num_checkpoints: int) -> None:
    summary = _synthetic_summary(num_checkpoints)
    for plot, name in [(plot_passk_curves, "curves.png"), (plot_over_steps, "steps.png")]:
        out = plot(summary, tmp_path / "plots" / name)  # type: ignore[operator]
        assert out == tmp_path / "plots" / name
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(out)  # (H, W, 4) floats in [0, 1]
        assert image.shape[0] > 300 and image.shape[1] > 500
        assert (image[..., :3] < 0.5).mean() > 0.005  # lines and text were drawn, not a blank canvas

