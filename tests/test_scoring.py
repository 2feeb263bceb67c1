"""As-of scoring with a model package: eligibility from the extract as known on the day (no
look-ahead), the study's own predictions and labels recomputed from the package, the
scoring command on a package alone, its refusals, its reruns and its history."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cohortflow import events, package, privacy, private, scoring
from cohortflow.cohorts import CohortPlan
from cohortflow.layout import Layout
from cohortflow.scoring._run import snakemake_command
from cohortflow.study import Cohort, ConceptSet
from tests.helpers import DEMO_ANALYSIS, cohortflow, ev

START, END = events.OBSERVATION_START, events.OBSERVATION_END
SETS = {"a": ConceptSet(include=[{"concept_id": 1}])}
CODES = pl.DataFrame({"code": ["CONDITION//1", "CONDITION//2"], "parent_codes": [[], []]})


def _plan(**cohort: object) -> CohortPlan:
    spec = {"entry": {"concept_set": "a"}, "prior_observation_days": 30, **cohort}
    return CohortPlan(Cohort.model_validate(spec), SETS, CODES)


def _observed(subject: int, start: str, end: str, *more: tuple[object, ...]
              ) -> list[tuple[object, ...]]:
    return [(subject, start, START), (subject, end, END), *more]


# ---- eligibility as of a day: pure functions on a few rows ---------------------------------

def test_eligible_as_of_a_day_is_the_cohort_open_on_it() -> None:
    frame = ev(
        # 1: indexed 2020-03-01, observed to 2025: eligible from 2020-03-01 on
        *_observed(1, "2019-01-01", "2025-01-01", (1, "2020-03-01T10:00", "CONDITION//1")),
        # 2: indexed, left observation 2020-04-30: eligible until then only
        *_observed(2, "2019-01-01", "2020-04-30", (2, "2020-02-01", "CONDITION//1")),
        # 3: indexed, died 2020-04-15 (observation still open in the extract)
        *_observed(3, "2019-01-01", "2025-01-01", (3, "2020-02-01", "CONDITION//1"),
                   (3, "2020-04-15", events.DEATH)),
        # 4: indexed with too little prior observation
        *_observed(4, "2020-02-20", "2025-01-01", (4, "2020-03-01", "CONDITION//1")),
        # 5: two entry events: one row
        *_observed(5, "2019-01-01", "2025-01-01", (5, "2020-01-01", "CONDITION//1"),
                   (5, "2020-02-01", "CONDITION//1")),
    )
    plan = _plan(entry={"concept_set": "a", "first_only": False})
    on = {d: scoring.eligible(plan, frame, date.fromisoformat(d))["subject_id"].to_list()
          for d in ("2020-02-29", "2020-03-01", "2020-04-20", "2020-05-01")}
    assert on == {"2020-02-29": [2, 3, 5], "2020-03-01": [1, 2, 3, 5],
                  "2020-04-20": [1, 2, 5], "2020-05-01": [1, 5]}
    table = scoring.eligible(plan, frame, date(2020, 3, 1))
    assert table["index_time"].unique().to_list() == [datetime(2020, 3, 1)]
    assert table.schema == scoring.eligible_steps(plan, frame, date(2020, 3, 1))[-1][1] \
        .collect_schema()


def test_a_closed_episode_is_not_eligible() -> None:
    frame = ev(*_observed(1, "2019-01-01", "2025-01-01", (1, "2020-03-01", "CONDITION//1")))
    plan = _plan(exit={"strategy": "date_offset", "offset_days": 30})
    assert scoring.eligible(plan, frame, date(2020, 3, 31)).height == 1
    assert scoring.eligible(plan, frame, date(2020, 4, 1)).height == 0


def test_nothing_after_the_day_changes_who_is_eligible_or_their_scores_inputs() -> None:
    """No look-ahead: events after D (an observation end, a death, a new diagnosis, an
    exposure's end) change neither the eligible persons nor the extract as known on D."""
    day = date(2020, 6, 30)
    base = [*_observed(1, "2019-01-01", "2025-01-01", (1, "2020-03-01", "CONDITION//1")),
            *_observed(2, "2019-01-01", "2025-01-01", (2, "2020-05-01", "CONDITION//1")),
            (2, "2020-06-01", "CONDITION//2"), (2, "2020-09-01", "END//CONDITION//2", 92.0)]
    later = [(1, "2020-07-01", events.DEATH), (2, "2020-07-02", "CONDITION//1"),
             (3, "2020-07-01", START), (3, "2020-07-01", "CONDITION//1"), (3, "2021-01-01", END)]
    plan = _plan(exit={"strategy": "date_offset", "offset_days": 60},
                 inclusion_rules=[])
    alone, more = ev(*base), ev(*base, *later)
    assert scoring.eligible(plan, alone, day).equals(scoring.eligible(plan, more, day))
    known = scoring.known_on(more, day).collect()
    assert known.equals(scoring.known_on(alone, day).collect())
    assert known["time"].max() <= datetime(2020, 6, 30)
    # an interval open on D ends on D, its length cut to match
    cut = known.filter(pl.col("code") == "END//CONDITION//2")
    assert cut.select("time", "numeric_value").rows() == [(datetime(2020, 6, 30), 29.0)]
    assert known.filter(pl.col("code") == END)["time"].to_list() == [datetime(2020, 6, 30)] * 2


def test_as_of_date_is_checked() -> None:
    assert scoring.parse_as_of("2024-02-29") == date(2024, 2, 29)
    for bad in ("2023-02-29", "20240301", "2024-3-1", "today"):
        with pytest.raises(scoring.ScoringError, match=rf"--as-of '{bad}': not a date "
                           r"YYYY-MM-DD; fix: --as-of 2024-03-01"):
            scoring.parse_as_of(bad)


def test_shared_summary_hides_small_counts() -> None:
    rng = np.random.default_rng(1)
    scores = rng.beta(2, 5, size=500)
    for m in (1, 11, 40):
        bins = scoring.pooled_histogram(scores, m)
        assert sum(b["persons"] for b in bins) == 500
        assert all(b["persons"] == 0 or b["persons"] >= m for b in bins)
        assert bins[0]["from"] == 0.0 and bins[-1]["to"] == 1.0
        assert all(a["to"] == b["from"] for a, b in itertools.pairwise(bins))
    codes = {"seen": {"A": 400}, "unseen": {"B": 12, "C": 3}}
    steps = [{"step": "entry", "subjects": 520}, {"step": "open", "subjects": 500}]
    record = scoring.summary(scores, codes, steps, min_cell_count=11, package_digest="p" * 64,
                             source_digest="s" * 64, as_of="2024-03-01")
    assert record["persons_scored"] == 500
    assert record["unseen_codes"] == {"codes": 2, "shown": {"B": 12}}
    assert [s["persons"] for s in record["eligibility"]] == ["520", "500"]
    assert abs(record["score"]["mean"] - scores.mean()) < 1e-12
    few = scoring.summary(scores[:7], codes, steps[:1], min_cell_count=11,
                          package_digest="p", source_digest="s", as_of="2024-03-01")
    assert few["persons_scored"] == "<11" and few["score"] is None


def test_unseen_codes_are_counted_apart() -> None:
    assert scoring.code_counts(["A|30d|count", "A|365d|mean", "MEDS_BIRTH|all|age_years"],
                               {"A": 5, "B": 2, "MEDS_BIRTH": 9}) == {
        "seen": {"A": 5, "MEDS_BIRTH": 9}, "unseen": {"B": 2}}


# ---- a package of the session's demo run ---------------------------------------------------

@pytest.fixture(scope="module")
def made(laptop_run: tuple[Path, subprocess.CompletedProcess[str]],
         tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(results/demo, its package), packaged once for the module."""
    results = laptop_run[0]
    out = tmp_path_factory.mktemp("scorepkg") / "model-pkg"
    package.write(results, out)
    return results, out


AS_OF = "2020-06-30"


def test_package_scores_the_study_persons_as_the_study_predicted(made: tuple[Path, Path]
                                                                 ) -> None:
    results, out = made
    layout, pkg = Layout(results), package.load(out)
    predictions = pl.read_parquet(layout.model_predictions(DEMO_ANALYSIS))
    scored = scoring.score_index(pkg, layout.store, predictions.select("subject_id",
                                                                       "index_time"))
    assert scored.select("subject_id", "index_time").equals(
        predictions.select("subject_id", "index_time"))
    np.testing.assert_allclose(scored["score"].to_numpy(), predictions["prediction"].to_numpy(),
                               rtol=0, atol=1e-9)
    # the labels of the same rows, from the same extract, are the study's labels
    labels = pl.read_parquet(layout.labels(DEMO_ANALYSIS))
    got = scoring.outcomes(pkg, layout.store, labels.select("subject_id", "index_time"))
    assert got["row"].to_list() == list(range(labels.height))
    assert got.drop("row").equals(labels.select(got.columns[1:]))


def test_outcomes_of_an_as_of_scoring(made: tuple[Path, Path]) -> None:
    """Persons scored as of D, labelled from the (later) extract: index D, the time at
    risk after it, censored at the end of observation."""
    results, out = made
    layout, pkg = Layout(results), package.load(out)
    plan = CohortPlan(scoring.Definitions.of(pkg).cohort, scoring.Definitions.of(pkg)
                      .concept_sets, events.read_codes(layout.store))
    index = pl.concat([scoring.eligible(plan, events.scan_shard(layout.store, s),
                                        date.fromisoformat(AS_OF))
                       for s in events.list_shards(layout.store)])
    assert index.height > 100
    labels = scoring.outcomes(pkg, layout.store, index)
    assert labels.height == index.height  # every one observed on D (no exclusion asked)
    start = datetime(2020, 7, 1)
    assert (labels.filter("label")["event_time"] >= start).all()
    assert (labels["censor_time"] <= datetime(2021, 6, 30)).all()
    assert 0 < labels["label"].sum() < labels.height


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_package_alone_scores_an_extract_as_of_a_date(made: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    results, out = made
    alone = tmp_path / "elsewhere" / "pkg"
    shutil.copytree(out, alone)
    work = tmp_path / "cwd"
    work.mkdir()
    store = Layout(results).store
    done = cohortflow("score", str(alone), "--source", str(store), "--as-of", AS_OF,
                      "--out", "scores", cwd=work)
    assert done.returncode == 0, done.stderr
    digest = package.load(alone).digest
    run = work / "scores" / digest[:12] / AS_OF
    expected = {"scores.parquet", "summary.json", "codes.json", "private/index.parquet",
                "private/eligible.parquet", "private/attrition.json",
                "features/values.parquet"}
    assert expected <= set(_files(run))
    for path in run.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path  # owner-only
    index = pl.read_parquet(run / "private" / "index.parquet")
    shared = pl.read_parquet(run / "scores.parquet")
    assert shared.schema == pl.Schema({"person": pl.String, "score": pl.Float64})
    assert index["index_time"].unique().to_list() == [datetime(2020, 6, 30)]
    assert index["subject_id"].is_unique().all() and index["subject_id"].is_sorted()
    assert sorted(privacy.pseudonyms(index["subject_id"].to_list())) == shared["person"].to_list()
    assert set(shared["score"].to_list()) == set(index["score"].to_list())
    # the as-of scores are the explicit-index scores at D
    again = scoring.score_index(package.load(alone), store, index.select("subject_id",
                                                                        "index_time"))
    assert again["score"].equals(index["score"])
    features = pl.read_parquet(run / "features" / scoring.FEATURES_FILE)
    assert features.columns == ["subject_id", *package.load(alone).columns]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["persons_scored"] == index.height
    assert summary["as_of"] == AS_OF and summary["package_digest"] == digest
    assert sum(b["persons"] for b in summary["score"]["histogram"]) == index.height
    text = (run / "summary.json").read_text()
    for word in ("subject_id", "index_time", *map(str, index["subject_id"].head(5))):
        assert f'"{word}"' not in text
    codes = json.loads((run / "codes.json").read_text())
    assert set(codes) == {"seen", "unseen"}
    assert summary["unseen_codes"]["codes"] == len(codes["unseen"])

    # the same scoring again runs no job and changes no byte
    before = _files(run)
    repeat = cohortflow("score", str(alone), "--source", str(store), "--as-of", AS_OF,
                        "--out", "scores", cwd=work)
    assert repeat.returncode == 0, repeat.stderr
    log = (work / "scores" / "logs" / f"{digest[:12]}-{AS_OF}.log").read_text()
    assert "Nothing to be done" in log and "rule score" not in log
    assert _files(run) == before

    # the history lists it
    listed = cohortflow("scores", "scores", cwd=work)
    assert listed.returncode == 0, listed.stderr
    assert AS_OF in listed.stdout and digest[:12] in listed.stdout
    assert str(index.height) in listed.stdout and "done" in listed.stdout


def test_an_omop_extract_scores_as_its_event_store(made: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    results, out = made
    layout = Layout(results)
    done = cohortflow("score", str(out), "--source", str(layout.omop), "--as-of", AS_OF,
                      "--out", str(tmp_path / "s"), "--shards", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "s" / package.load(out).digest[:12] / AS_OF
    from_omop = pl.read_parquet(run / "private" / "index.parquet")
    assert len(list((tmp_path / "s" / "stores").iterdir())) == 1
    plan = CohortPlan(scoring.Definitions.of(package.load(out)).cohort,
                      scoring.Definitions.of(package.load(out)).concept_sets,
                      events.read_codes(layout.store))
    index = pl.concat([scoring.eligible(plan, events.scan_shard(layout.store, s),
                                        date.fromisoformat(AS_OF))
                       for s in events.list_shards(layout.store)]).sort("subject_id")
    from_store = scoring.score_index(package.load(out), layout.store, index)
    assert from_omop.equals(from_store)


def test_bad_packages_and_extracts_are_refused_through_the_command(
        made: tuple[Path, Path], tmp_path: Path) -> None:
    results, out = made
    layout = Layout(results)
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    columns = next(tampered.glob("analyses/*/columns.json"))
    columns.write_text(columns.read_text().replace("365d", "366d", 1))
    refused = cohortflow("score", str(tampered), "--source", str(layout.store), "--as-of",
                         AS_OF, "--out", "scores", cwd=tmp_path)
    assert refused.returncode == 2
    message = refused.stderr.replace("\n", "")
    assert f"{columns}: changed since the package was made" in message, refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "scores").exists()

    cdm = tmp_path / "cdm"
    cdm.mkdir()
    for entry in layout.omop.iterdir():
        if entry.name != "measurement":
            (cdm / entry.name).symlink_to(entry)
    missing = cohortflow("score", str(out), "--source", str(cdm), "--as-of", AS_OF,
                         "--out", "scores", cwd=tmp_path)
    assert missing.returncode == 2
    message = missing.stderr.replace("\n", "")
    assert (f"{cdm}: table measurement missing; the model package's feature columns "
            "(MEASUREMENT codes) read it; fix: export the OMOP CDM measurement table"
            in message), missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "scores").exists()

    no_key = cohortflow("score", str(out), "--source", str(layout.store), "--as-of", AS_OF,
                        "--out", "scores", cwd=tmp_path,
                        env={privacy.PSEUDONYM_KEY_ENV: ""})
    assert no_key.returncode == 2 and "no pseudonym key" in no_key.stderr

    no_days = cohortflow("score", str(out), "--source", str(layout.store), "--as-of", AS_OF,
                         "--entered-within", "0", "--out", "scores", cwd=tmp_path)
    assert no_days.returncode == 2 and "--entered-within 0: not a number of days" in \
        no_days.stderr.replace("\n", ""), no_days.stderr
    assert not (tmp_path / "scores").exists()


def test_new_entrants_are_scored_at_entry_as_the_study_predicted(made: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    """--entered-within: the persons who entered in the window, each at its entry's index
    time; on the study's own extract, the study's predictions."""
    results, out = made
    layout = Layout(results)
    done = cohortflow("score", str(out), "--source", str(layout.store), "--as-of", AS_OF,
                      "--entered-within", "183", "--out", "scores", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "scores" / package.load(out).digest[:12] / AS_OF
    index = pl.read_parquet(run / "private" / "index.parquet")
    assert index.height > 20
    day = date.fromisoformat(AS_OF)
    entry = index["index_time"].dt.date()
    assert ((entry > day - timedelta(days=183)) & (entry <= day)).all()
    predictions = pl.read_parquet(layout.model_predictions(DEMO_ANALYSIS))
    both = index.join(predictions, on=["subject_id", "index_time"], how="inner")
    # a new entrant is a study person at the same index (the study's population settings
    # may leave a few out of its predictions)
    assert both.height >= 0.9 * index.height, (both.height, index.height)
    np.testing.assert_allclose(both["score"].to_numpy(), both["prediction"].to_numpy(),
                               rtol=0, atol=1e-9)
    attrition = json.loads((run / "private" / "attrition.json").read_text())
    assert "Entered within 183 days" in [s["step"] for s in attrition]
    monitor = json.loads((run / "monitor.json").read_text())
    assert "flags" in monitor and (run.parent / "monitor.html").is_file()


def test_an_event_store_without_a_needed_family_is_refused(made: tuple[Path, Path]) -> None:
    _, out = made
    defs = scoring.Definitions.of(package.load(out))
    assert defs.feature_families() == ["CONDITION", "DRUG", "MEASUREMENT", "PROCEDURE"]
    codes = pl.DataFrame({"code": ["CONDITION//317009", "DRUG//1", "PROCEDURE//2",
                                   events.BIRTH, "GENDER//8507"]})
    with pytest.raises(scoring.ScoringError, match=(
            r"store/: the extract has no MEASUREMENT codes \(OMOP table measurement\), and "
            r"the model package's feature columns read them; fix:")):
        scoring.check_store(defs, codes, "store/")
    scoring.check_store(defs, pl.concat([codes, pl.DataFrame({"code": ["MEASUREMENT//3"]})]),
                        "store/")


def test_scores_history_of_a_missing_folder(tmp_path: Path) -> None:
    done = cohortflow("scores", str(tmp_path / "none"), cwd=tmp_path)
    assert done.returncode == 2
    assert "not a folder; fix: give the --out folder of `cohortflow score`" in done.stderr



@pytest.mark.parametrize("profile", ["slurm", "slurm-dask"])
def test_the_cluster_profiles_plan_the_scoring_workflow(made: tuple[Path, Path], tmp_path: Path,
                                                        profile: str) -> None:
    """A dry run under each cluster profile plans the four steps (no SLURM needed)."""
    results, out = made
    run = scoring.prepare(out, Layout(results).omop, AS_OF, tmp_path / "scores")
    private.protect(run.out)
    planned = subprocess.run(snakemake_command(run, profile, ["-n"]), capture_output=True,
                             text=True, check=False, cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr[-3000:]
    for rule in ("ingest", "eligible", "score_features", "score"):
        assert re.search(rf"^{rule}\s+1$", planned.stdout, re.MULTILINE), planned.stdout
