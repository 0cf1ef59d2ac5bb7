"""Tables 1-3 from a small seeded synthetic face-metric table."""

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defaceaudit import tables
from defaceaudit.metrics import face_tables
from defaceaudit.metrics.face_tables import (
    FACE_METRIC_COLUMNS,
    FEW_MARK,
    TABLE_NAMES,
    format_ci,
    format_p,
    paired_tests,
    paper_tables,
    read_face_metrics,
    summarise,
    write_face_tables,
)
from defaceaudit.stats import bootstrap_mean_ci, median_difference, wilcoxon_paired

N_RESAMPLES = 200  # fast; the statistics are tested in test_stats.py
#: typical values per image type: MASD (mm), PSNR head / face (dB), SSIM head / face
LEVELS = {
    "defaced": (4.0, 15.0, 5.0, 0.90, 0.01),
    "population_average": (0.8, 20.0, 12.0, 0.90, 0.30),
    "dpm_refaced": (0.6, 22.0, 11.5, 0.93, 0.20),
}
DEFACERS = ("quickshear", "pydeface")


def _image_name(image_type, defacer):
    return {"defaced": defacer, "population_average": "avgface"}.get(image_type, f"dpm_{defacer}")


def face_rows(image_types=("defaced", "population_average"), n_internal=4, n_external=6, seed=0):
    """One row per subject x defacer x image type, metrics around LEVELS with seeded noise."""
    rng = np.random.default_rng(seed)
    records = []
    for test_set, n in (("external_test", n_external), ("internal_test", n_internal)):
        for s in range(n):
            for defacer in DEFACERS:
                for image_type in image_types:
                    masd, psnr_h, psnr_f, ssim_h, ssim_f = LEVELS[image_type]
                    masd = masd + rng.normal(0, 0.2)
                    records.append(
                        {
                            "subject": f"{test_set[:3]}{s:02d}",
                            "test_set": test_set,
                            "defacer": defacer,
                            "image_type": image_type,
                            "image": _image_name(image_type, defacer),
                            "masd_mm": masd,
                            "masd_symmetric_mm": masd * 1.1 + rng.normal(0, 0.05),
                            "ssim_head": ssim_h + rng.normal(0, 0.01),
                            "psnr_head_db": psnr_h + rng.normal(0, 0.5),
                            "ssim_face": ssim_f + rng.normal(0, 0.01),
                            "psnr_face_db": psnr_f + rng.normal(0, 0.5),
                            "n_face_voxels": int(rng.integers(1000, 2000)),
                        }
                    )
    return pd.DataFrame.from_records(records, columns=list(FACE_METRIC_COLUMNS))


def _all_tables(rows):
    summary = summarise(rows, n_resamples=N_RESAMPLES)
    return summary, paired_tests(rows), paper_tables(summary, paired_tests(rows))


def test_table_shapes_headers_and_order():
    _, _, out = _all_tables(face_rows())
    assert list(out) == list(TABLE_NAMES)
    assert list(out["table1_masd"].columns) == [
        "Testing set",
        "Defaced by",
        "Defaced",
        "Refaced with a population average",
        "Refaced with DPMs",
        "Median difference: population average - DPMs",
        "p: population average vs DPMs",
        "Median difference: defaced - population average",
        "p: defaced vs population average",
        "Median difference: defaced - DPMs",
        "p: defaced vs DPMs",
    ]
    assert list(out["table2_psnr"].columns[2:]) == [
        f"{region}: {kind}"
        for region in ("Whole head", "Face (M5)")
        for kind in ("defaced", "population average", "DPMs-refaced")
    ] + [
        f"{region}: {kind}"
        for region in ("Whole head", "Face (M5)")
        for kind in ("population average - DPMs", "p")
    ]
    for table in out.values():
        assert table.shape[0] == 4
        # internal before external (paper order), defacers alphabetically
        assert table["Testing set"].tolist() == ["Internal (N=4)"] * 2 + ["External (N=6)"] * 2
        assert table["Defaced by"].tolist() == ["pydeface", "quickshear"] * 2


def test_missing_dpm_rows_give_na_cells():
    _, _, out = _all_tables(face_rows())
    t1 = out["table1_masd"]
    assert (t1["Refaced with DPMs"] == "n/a").all()
    assert (t1["p: population average vs DPMs"] == "n/a").all()
    assert (t1["Median difference: population average - DPMs"] == "n/a").all()
    assert (t1["p: defaced vs DPMs"] == "n/a").all()
    assert (t1["p: defaced vs population average"] != "n/a").all()
    assert (out["table3_ssim"]["Face (M5): DPMs-refaced"] == "n/a").all()
    assert (out["table3_ssim"]["Face (M5): p"] == "n/a").all()
    # 4 and 6 subjects: every CI is flagged as resting on fewer than 10 subjects
    ci = r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]"
    assert t1["Defaced"].str.fullmatch(ci + FEW_MARK).all()
    assert out["table3_ssim"]["Whole head: defaced"].str.fullmatch(r"0\.\d{3} \[.*\]\u2020").all()


def test_population_average_only_and_defaced_only():
    _, tests, out = _all_tables(face_rows(image_types=("defaced",)))
    assert tests.empty
    assert (out["table1_masd"]["Refaced with a population average"] == "n/a").all()
    assert (out["table1_masd"]["p: defaced vs population average"] == "n/a").all()


def test_summary_cells_are_bootstrap_means():
    rows = face_rows()
    summary = summarise(rows, n_resamples=N_RESAMPLES, seed=3)
    cell = summary.query(
        "test_set == 'internal_test' and defacer == 'quickshear' and metric == 'masd_mm' "
        "and image_type == 'defaced'"
    ).iloc[0]
    values = rows.query(
        "test_set == 'internal_test' and defacer == 'quickshear' and image_type == 'defaced'"
    )["masd_mm"]
    expected = bootstrap_mean_ci(values, n_resamples=N_RESAMPLES, seed=3)
    assert (cell["n"], cell["mean"], cell["ci_low"], cell["ci_high"]) == (
        expected["n"],
        expected["mean"],
        expected["ci_low"],
        expected["ci_high"],
    )
    assert cell["image"] == "quickshear"
    # 2 test sets x 2 defacers x 6 metrics x 2 image types
    assert len(summary) == 48


def test_every_table_cell_is_its_summary_row():
    rows = face_rows(image_types=("defaced", "population_average", "dpm_refaced"))
    summary, _, out = _all_tables(rows)
    labels = {"Internal (N=4)": "internal_test", "External (N=6)": "external_test"}
    kinds = {
        "defaced": "defaced",
        "population average": "population_average",
        "DPMs-refaced": "dpm_refaced",
    }
    columns = {
        "table1_masd": {
            "Defaced": ("masd_mm", "defaced"),
            "Refaced with a population average": ("masd_mm", "population_average"),
            "Refaced with DPMs": ("masd_mm", "dpm_refaced"),
        },
        "table2_psnr": {
            f"{region}: {kind}": (metric, image_type)
            for region, metric in (("Whole head", "psnr_head_db"), ("Face (M5)", "psnr_face_db"))
            for kind, image_type in kinds.items()
        },
        "table3_ssim": {
            f"{region}: {kind}": (metric, image_type)
            for region, metric in (("Whole head", "ssim_head"), ("Face (M5)", "ssim_face"))
            for kind, image_type in kinds.items()
        },
    }
    checked = 0
    for name, wanted in columns.items():
        decimals = 3 if name == "table3_ssim" else 2
        for _, row in out[name].iterrows():
            for column, (metric, image_type) in wanted.items():
                cell = summary[
                    (summary["test_set"] == labels[row["Testing set"]])
                    & (summary["defacer"] == row["Defaced by"])
                    & (summary["metric"] == metric)
                    & (summary["image_type"] == image_type)
                ].iloc[0]
                expected = format_ci(
                    cell["mean"], cell["ci_low"], cell["ci_high"], decimals, few=cell["n"] < 10
                )
                assert row[column] == expected, (name, column, row["Defaced by"])
                checked += 1
    assert checked == 4 * (3 + 6 + 6)


def test_p_values_equal_wilcoxon_on_the_same_pairs():
    rows = face_rows(image_types=tuple(LEVELS), n_internal=7, n_external=8)
    # drop one subject's DPM image: the pair test must use only subjects with both images
    rows = rows.drop(
        rows.index[(rows["subject"] == "ext03") & (rows["image_type"] == "dpm_refaced")]
    )
    summary, tests, out = _all_tables(rows)
    for (test_set, defacer), block in rows.groupby(["test_set", "defacer"]):
        wide = block.pivot(index="subject", columns="image_type", values="masd_mm").dropna()
        expected = wilcoxon_paired(wide["population_average"], wide["dpm_refaced"])
        row = tests.query(
            "test_set == @test_set and defacer == @defacer and metric == 'masd_mm' "
            "and image_a == 'population_average' and image_b == 'dpm_refaced'"
        ).iloc[0]
        assert row["n"] == expected["n"] == len(wide)
        assert row["p_value"] == expected["p_value"]
        assert row["statistic"] == expected["statistic"]
        assert pd.isna(row["p_note"]) and row["p_min"] == 2.0 ** (1 - row["n"])
        diff = median_difference(
            wide["population_average"], wide["dpm_refaced"], n_resamples=N_RESAMPLES
        )
        assert row["median_diff"] == pytest.approx(
            np.median(wide["population_average"] - wide["dpm_refaced"])
        )
        assert (row["median_diff_ci_low"], row["median_diff_ci_high"]) == (
            diff["ci_low"],
            diff["ci_high"],
        )
        label = out["table1_masd"]
        line = label.loc[
            label["Testing set"].str.startswith("Internal" if test_set == "internal_test" else "E")
            & (label["Defaced by"] == defacer)
        ]
        assert line["p: population average vs DPMs"].item() == format_p(expected["p_value"])
        assert line["Median difference: population average - DPMs"].item() == format_ci(
            diff["median"], diff["ci_low"], diff["ci_high"], few=True
        )
    assert set(tests["method"]) == {"exact"}
    assert tests.query("test_set == 'external_test'")["n"].min() == 7


def test_four_pairs_say_too_few_instead_of_a_bare_p():
    """4 pairs: the exact two-sided Wilcoxon p is at least 2 * 2**-4 = 0.125, whatever the data;
    the cell says so. 6 pairs (floor 0.031) print the p."""
    summary, tests, out = _all_tables(face_rows(image_types=tuple(LEVELS)))  # 4 int., 6 ext.
    internal = tests[tests["test_set"] == "internal_test"]
    assert (internal["p_min"] == 0.125).all()
    # the defaced face is 3 mm further from the original for every subject: p is at its floor
    assert (
        internal.query("metric == 'masd_mm' and image_a == 'defaced'")["p_value"] == 0.125
    ).all()
    assert (internal["p_note"] == "too few pairs (N=4, p >= 0.125)").all()
    external = tests[tests["test_set"] == "external_test"]
    assert external["p_note"].isna().all() and (external["p_min"] == 2.0**-5).all()
    for name in ("table1_masd", "table2_psnr", "table3_ssim"):
        table = out[name]
        p_columns = [c for c in table.columns if c.startswith("p:") or c.endswith(": p")]
        cells = table.loc[table["Testing set"].str.startswith("Internal"), p_columns]
        assert (cells == "too few pairs (N=4, p >= 0.125)").all().all(), name
        assert (
            not table.loc[table["Testing set"].str.startswith("External"), p_columns]
            .map(lambda c: c.startswith("too few"))
            .any()
            .any()
        )
    md = face_tables.table_markdown("table1_masd", out["table1_masd"], summary, tests)
    assert "0.125 for 4 pairs" in md and "fewer than 10 subjects" in md


def test_median_difference_shows_direction_of_a_constant_shift():
    """DPM faces exactly 0.25 mm closer than the population average for every subject: the
    median difference population average - DPMs is +0.25 with the CI [0.25, 0.25]."""
    rows = face_rows(image_types=tuple(LEVELS), n_internal=12, n_external=3)
    dpm = rows["image_type"] == "dpm_refaced"
    average = rows.loc[rows["image_type"] == "population_average"].set_index(
        ["subject", "defacer"]
    )["masd_mm"]
    keys = pd.MultiIndex.from_frame(rows.loc[dpm, ["subject", "defacer"]])
    rows.loc[dpm, "masd_mm"] = average.reindex(keys).to_numpy() - 0.25
    summary, tests, out = _all_tables(rows)
    shifted = tests.query("metric == 'masd_mm' and image_a == 'population_average'")
    np.testing.assert_allclose(shifted["median_diff"], 0.25)
    np.testing.assert_allclose(shifted["median_diff_ci_low"], 0.25)
    np.testing.assert_allclose(shifted["median_diff_ci_high"], 0.25)
    internal = shifted[shifted["test_set"] == "internal_test"]
    assert internal["ci_note"].isna().all()  # 12 subjects: no flag
    assert (shifted[shifted["test_set"] == "external_test"]["ci_note"].str.contains("fewer")).all()
    t1 = out["table1_masd"].set_index(["Testing set", "Defaced by"])
    assert t1.loc[
        ("Internal (N=12)", "pydeface"), "Median difference: population average - DPMs"
    ] == ("0.25 [0.25, 0.25]")
    assert t1.loc[
        ("External (N=3)", "pydeface"), "Median difference: population average - DPMs"
    ] == (f"0.25 [0.25, 0.25]{FEW_MARK}")
    assert not t1.loc["Internal (N=12)", "Defaced"].str.endswith(FEW_MARK).any()
    assert summary.loc[summary["n"] == 12, "ci_note"].isna().all()
    assert summary.loc[summary["n"] == 3, "ci_note"].notna().all()


def test_format_p():
    assert format_p(0.0261) == "0.026"
    assert format_p(3.14e-5) == "3.1e-05"
    assert format_p(1.0) == "1.000"
    assert format_p(float("nan")) == "n/a"
    assert format_p(0.0) == "<1e-300"
    assert "<<" not in format_p(1e-12)


def test_infinite_psnr_is_excluded_and_counted():
    rows = face_rows(image_types=tuple(LEVELS))
    hit = (rows["subject"] == "int01") & (rows["defacer"] == "pydeface")
    rows.loc[hit & (rows["image_type"] == "dpm_refaced"), "psnr_head_db"] = np.inf
    rows.loc[hit & (rows["image_type"] == "population_average"), "psnr_head_db"] = np.inf
    summary, tests, out = _all_tables(rows)
    cell = summary.query(
        "test_set == 'internal_test' and defacer == 'pydeface' and metric == 'psnr_head_db' "
        "and image_type == 'dpm_refaced'"
    ).iloc[0]
    assert (cell["n"], cell["n_infinite"], cell["n_missing"]) == (3, 1, 0)
    assert np.isfinite([cell["mean"], cell["ci_low"], cell["ci_high"]]).all()
    assert out["table2_psnr"]["Testing set"].iloc[0] == "Internal (N=4)"
    assert "inf" not in " ".join(out["table2_psnr"].iloc[:, 2:].to_numpy().ravel())
    test = tests.query(
        "test_set == 'internal_test' and defacer == 'pydeface' and metric == 'psnr_head_db' "
        "and image_a == 'population_average' and image_b == 'dpm_refaced'"
    ).iloc[0]
    assert (test["n"], test["n_nonzero"]) == (4, 3)  # inf vs inf is a tie
    assert test["p_note"] == "too few pairs (3 non-zero of N=4, p >= 0.25)"
    markdown = face_tables.table_markdown("table2_psnr", out["table2_psnr"], summary, tests)
    assert "(2 in this table" in markdown


def _out_paths(folder: Path) -> dict[str, str]:
    out = {"summary": str(folder / "summary.tsv"), "tests": str(folder / "tests.tsv")}
    for name in TABLE_NAMES:
        out[name] = str(folder / f"{name}.tsv")
        out[f"{name}_md"] = str(folder / f"{name}.md")
    return out


def test_write_face_tables_writes_atomically(tmp_path, monkeypatch):
    out = _out_paths(tmp_path / "tables")
    Path(out["table1_masd_md"]).parent.mkdir()
    Path(out["table1_masd_md"]).write_text("old\n")
    seen = {}

    @contextmanager
    def spy(path):
        with tables.atomic_path(path) as tmp:
            yield tmp
            # the content went to a temporary file; the target is untouched until the rename
            seen[str(path)] = (
                Path(tmp).name,
                Path(path).read_text() if Path(path).exists() else None,
            )

    monkeypatch.setattr(face_tables, "atomic_path", spy)
    written = write_face_tables(face_rows(), out, n_resamples=N_RESAMPLES, seed=1)
    md_paths = [out[f"{n}_md"] for n in TABLE_NAMES]
    assert sorted(seen) == sorted(md_paths)
    assert seen[out["table1_masd_md"]][1] == "old\n"
    assert all(name.startswith(".") and ".tmp-" in name for name, _ in seen.values())
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(
        Path(p).name for p in out.values()
    )
    text = Path(out["table1_masd_md"]).read_text().splitlines()
    assert text[0].startswith("Table 1. Mean absolute surface distance (mm)")
    assert "other -> original" in text[0]
    body = "\n".join(text)
    assert "| Testing set" in body and "Internal (N=4)" in body
    assert f"n={N_RESAMPLES} resamples" in body and "Wilcoxon signed-rank" in body
    assert "avgface" in body
    # the test sets are named for what they are, and the paper's finding is not implied
    assert "Internal = subjects left out of training" in body
    assert "the same two people the models learnt" in body and "cannot reproduce it" in body
    # formatted cells are written verbatim (tabulate would print 0.125 p-values as numbers)
    p_cells = written["table1_masd"]["p: defaced vs population average"]
    assert all(f"| {p} " in body for p in p_cells)
    assert "Face (M5): the intersection" in Path(out["table3_ssim_md"]).read_text()
    tsv = pd.read_csv(out["table1_masd"], sep="\t", keep_default_na=False, dtype=str)
    pd.testing.assert_frame_equal(tsv, written["table1_masd"])
    summary = pd.read_csv(out["summary"], sep="\t")
    assert list(summary.columns[:4]) == ["test_set", "defacer", "metric", "image_type"]
    assert "ci_note" in summary.columns
    tests = pd.read_csv(out["tests"], sep="\t", na_values=["n/a"], keep_default_na=False)
    assert list(tests.columns) == list(face_tables.TEST_COLUMNS)
    assert tests["median_diff"].dtype == float and tests["p_min"].dtype == float
    assert (
        tests.loc[tests["test_set"] == "internal_test", "p_note"].str.startswith("too few")
    ).all()
    assert tests.loc[tests["test_set"] == "external_test", "p_note"].isna().all()


def test_write_face_tables_checks_output_keys(tmp_path):
    with pytest.raises(ValueError, match="missing keys"):
        write_face_tables(face_rows(), {"summary": str(tmp_path / "s.tsv")})
    with pytest.raises(ValueError, match="unknown keys"):
        out = _out_paths(tmp_path) | {"table4": str(tmp_path / "t4.tsv")}
        write_face_tables(face_rows(), out)


def test_read_face_metrics_round_trip(tmp_path):
    rows = face_rows(image_types=("defaced", "population_average"))
    rows.loc[0, "masd_mm"] = np.nan
    rows.loc[1, "psnr_head_db"] = np.inf
    half = len(rows) // 2
    paths = [tmp_path / "a.tsv", tmp_path / "b.tsv"]
    tables.write_tsv(rows.iloc[:half], paths[0])
    tables.write_tsv(rows.iloc[half:], paths[1])
    assert "n/a" in paths[0].read_text()
    back = read_face_metrics(paths)
    assert list(back.columns) == list(FACE_METRIC_COLUMNS)
    assert back["subject"].iloc[0] == "ext00"
    assert np.isnan(back.loc[0, "masd_mm"]) and np.isinf(back.loc[1, "psnr_head_db"])
    np.testing.assert_array_equal(back["masd_mm"].to_numpy(), rows["masd_mm"].to_numpy())
    assert list(read_face_metrics([]).columns) == list(FACE_METRIC_COLUMNS)


def test_bad_input_is_rejected():
    rows = face_rows()
    with pytest.raises(ValueError, match="more than one"):
        summarise(pd.concat([rows, rows.iloc[:1]]))
    with pytest.raises(ValueError, match="ssim_face"):
        paired_tests(rows.drop(columns="ssim_face"))


def test_empty_input_gives_empty_tables():
    rows = face_rows().iloc[:0]
    _, tests, out = _all_tables(rows)
    assert tests.empty
    assert all(t.empty for t in out.values())
    assert "Refaced with DPMs" in out["table1_masd"].columns


def test_a_dpm_row_no_closer_than_defaced_is_marked_as_a_weak_attack():
    """One defacer's DPM faces made 0.5 mm further from the originals than its defaced input on
    the external set only: only those Table 1 cells carry the mark, and the Markdown says why."""
    rows = face_rows(image_types=tuple(LEVELS), n_internal=4, n_external=4)
    defacer = DEFACERS[0]
    weak = (rows["defacer"] == defacer) & (rows["test_set"] == "external_test")
    defaced = rows[weak & (rows["image_type"] == "defaced")].set_index("subject")["masd_mm"]
    target = weak & (rows["image_type"] == "dpm_refaced")
    rows.loc[target, "masd_mm"] = defaced.reindex(rows.loc[target, "subject"]).to_numpy() + 0.5
    summary, tests, out = _all_tables(rows)
    t1 = out["table1_masd"].set_index(["Testing set", "Defaced by"])
    marked = t1["Refaced with DPMs"].str.endswith(face_tables.NO_BETTER_MARK)
    assert marked.loc[("External (N=4)", defacer)]
    assert marked.sum() == 1
    text = face_tables.table_markdown("table1_masd", out["table1_masd"], summary, tests)
    assert "not that the defacer protects" in text
    clean = face_tables.table_markdown(
        "table1_masd",
        _all_tables(face_rows(image_types=tuple(LEVELS)))[2]["table1_masd"],
        summary,
        tests,
    )
    assert face_tables.NO_BETTER_MARK not in clean


def test_a_dpm_row_better_on_average_but_not_for_every_subject_counts_them():
    """The mean hides one external subject whose DPM face is further than its defaced one: the
    cell says for how many subjects the attack failed; without per-subject rows it cannot."""
    rows = face_rows(image_types=tuple(LEVELS), n_internal=4, n_external=4)
    defacer = DEFACERS[0]
    weak = (rows["defacer"] == defacer) & (rows["test_set"] == "external_test")
    defaced = rows[weak & (rows["image_type"] == "defaced")].set_index("subject")["masd_mm"]
    refaced = weak & (rows["image_type"] == "dpm_refaced")
    subjects = rows.loc[refaced, "subject"]
    rows.loc[refaced, "masd_mm"] = defaced.reindex(subjects).to_numpy() * 0.3
    one = refaced & (rows["subject"] == subjects.iloc[0])
    rows.loc[one, "masd_mm"] = defaced[subjects.iloc[0]] + 0.1
    summary, tests = summarise(rows, n_resamples=N_RESAMPLES), paired_tests(rows)
    cell = (
        paper_tables(summary, tests, rows)["table1_masd"]
        .set_index(["Testing set", "Defaced by"])
        .loc[("External (N=4)", defacer), "Refaced with DPMs"]
    )
    assert cell.endswith(" [attack no better than defaced for 1 of 4 subjects]")
    table = paper_tables(summary, tests, rows)["table1_masd"]
    assert "not that the defacer protects" in face_tables.table_markdown(
        "table1_masd", table, summary, tests
    )
    alone = paper_tables(summary, tests)["table1_masd"]["Refaced with DPMs"]
    assert not alone.str.contains("attack no better", regex=False).any()
