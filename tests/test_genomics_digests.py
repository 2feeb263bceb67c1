"""The genotype files' digests (the conversion's rerun key) are computed once per content:
kept in this process and in the owner-only cache file across processes (each SLURM job
parses the workflow), hashed again when a file's stats change, and a cache that cannot be
read is ignored and written anew.  Each "parse" below is a fresh :func:`load_study` with
the process's memory of digests cleared, as in a new process."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from cohortflow.study import Study, _digests, load_study

LONG_AGO = 10**18  # ns since the epoch (2001): a file last modified then is not racy


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The files hashed from here on (their bytes read), in order; the cache folder is the
    test's own, and each test starts without this process's memory of digests."""
    monkeypatch.setenv("COHORTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_digests, "_IN_PROCESS", {})
    seen: list[Path] = []
    real = _digests.hash_files

    def counted(root: Path, files: list[Path]) -> str:
        seen.append(root)
        return real(root, files)

    monkeypatch.setattr(_digests, "hash_files", counted)
    return seen


def _study(folder: Path, vcf: bytes = b"##fileformat=VCFv4.3\nA") -> Path:
    """A study whose genotypes are ``folder/a.vcf.gz`` (content ``vcf``), modified long
    ago, and a linkage table."""
    (folder / "a.vcf.gz").write_bytes(vcf)
    os.utime(folder / "a.vcf.gz", ns=(LONG_AGO, LONG_AGO))
    (folder / "link.csv").write_text("sample_id,person_id\n")
    os.utime(folder / "link.csv", ns=(LONG_AGO, LONG_AGO))
    raw = yaml.safe_load((Path(__file__).parents[1] / "seeds" / "studies" / "pgx.yaml")
                         .read_text())
    raw["genomics"] = {"vcf": ["a.vcf.gz"], "linkage": "link.csv"}
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _parse(path: Path) -> Study:
    """A new process's parse: no digest in memory, the study loaded and every genotype
    key asked for (as the genotype rules do)."""
    _digests._IN_PROCESS.clear()
    study = load_study(path)
    study.genomics_digest(), study.linkage_digest(), study.phenotypes_digest()
    return study


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / _digests.CACHE_FILE


def test_a_file_is_hashed_once_across_parses(hashed: list[Path], tmp_path: Path) -> None:
    path = _study(tmp_path)
    first = _parse(path).genomics_digest()
    vcf, link = tmp_path / "a.vcf.gz", tmp_path / "link.csv"
    assert hashed == [vcf, link]  # each once, though four keys read them
    second = _parse(path).genomics_digest()
    assert second == first and hashed == [vcf, link]  # the second parse read no bytes
    assert first == hashlib.sha256(json.dumps({"files": [hashlib.sha256(
        vcf.read_bytes()).hexdigest()[:16]], "partitions": 4}, sort_keys=True).encode()
    ).hexdigest()[:16]
    cache = _cache(tmp_path)
    assert cache.stat().st_mode & 0o777 == 0o600
    assert cache.parent.stat().st_mode & 0o777 == 0o700
    assert set(json.loads(cache.read_text())) == {str(vcf.resolve()), str(link.resolve())}
    assert not [p for p in cache.parent.iterdir() if p != cache]  # no temporary left


def test_new_content_of_the_same_size_is_hashed_again(hashed: list[Path],
                                                      tmp_path: Path) -> None:
    path = _study(tmp_path)
    vcf = tmp_path / "a.vcf.gz"
    first = _parse(path).genomics_digest()
    inode = vcf.stat().st_ino
    vcf.write_bytes(b"##fileformat=VCFv4.3\nB")  # same size, same inode, written now
    assert vcf.stat().st_ino == inode
    second = _parse(path).genomics_digest()
    assert second != first and hashed.count(vcf) == 2
    assert _parse(path).genomics_digest() == second


def test_a_file_modified_just_now_is_not_trusted_across_processes(
        hashed: list[Path], tmp_path: Path) -> None:
    """A file hashed right after it was written is kept in memory only: a rewrite in the
    same clock tick at the same size could leave every stat field unchanged."""
    path = _study(tmp_path)
    vcf = tmp_path / "a.vcf.gz"
    vcf.write_bytes(b"##fileformat=VCFv4.3\nC")
    before = vcf.stat()
    first = _parse(path).genomics_digest()
    assert str(vcf.resolve()) not in json.loads(_cache(tmp_path).read_text())
    vcf.write_bytes(b"##fileformat=VCFv4.3\nD")  # same size, inode, and these times:
    os.utime(vcf, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert _parse(path).genomics_digest() != first


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"x": {"stat": 1}}', b""])
def test_a_corrupt_cache_is_ignored_and_written_anew(hashed: list[Path], tmp_path: Path,
                                                     damage: bytes) -> None:
    path = _study(tmp_path)
    first = _parse(path).genomics_digest()
    _cache(tmp_path).write_bytes(damage)
    assert _parse(path).genomics_digest() == first
    assert len(hashed) == 4  # both files hashed again
    entries = json.loads(_cache(tmp_path).read_text())
    assert set(entries) == {str((tmp_path / n).resolve()) for n in ("a.vcf.gz", "link.csv")}
    assert _parse(path).genomics_digest() == first and len(hashed) == 4


def test_a_cache_that_cannot_be_written_costs_only_time(hashed: list[Path],
                                                        tmp_path: Path) -> None:
    path = _study(tmp_path)
    (tmp_path / "cache").write_text("a file where the folder would be")
    first = _parse(path).genomics_digest()
    assert _parse(path).genomics_digest() == first and len(hashed) == 4
