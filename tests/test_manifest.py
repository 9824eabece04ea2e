"""The one checksum manifest every artifact uses: real files, changed on disk the ways a copy goes wrong."""

from __future__ import annotations

import hashlib

import pytest

from physai.core.errors import BundleError
from physai.core.manifest import files_section, read_json_object, verify_bytes, verify_files
from physai.deploy.gates import welch_difference


class Refused(Exception):
    pass


def _directory(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"policy bytes")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("state")
    return tmp_path


def test_files_section_records_every_file_by_relative_path(tmp_path):
    files = files_section(_directory(tmp_path))
    assert sorted(files) == ["a.bin", "sub/b.txt"]
    assert files["a.bin"] == {"sha256": hashlib.sha256(b"policy bytes").hexdigest(), "bytes": 12}
    verify_files(tmp_path, files, error=Refused, manifest="m.json", fix="fix it")  # intact: no error


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "sub" / "b.txt").write_text("State"), "sub/b.txt does not match its manifest checksum"),
    (lambda d: (d / "a.bin").unlink(), "a.bin is listed in the manifest m.json but missing"),
])
def test_a_changed_or_lost_file_is_refused_with_the_callers_error_and_fix(tmp_path, damage, words):
    files = files_section(_directory(tmp_path))
    damage(tmp_path)
    with pytest.raises(Refused, match=words) as refused:
        verify_files(tmp_path, files, error=Refused, manifest="m.json", fix="copy the whole directory")
    assert str(refused.value).endswith("copy the whole directory")


def test_a_name_leading_out_of_the_directory_is_refused_before_it_is_read(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    record = {"sha256": hashlib.sha256(b"not yours").hexdigest()}
    with pytest.raises(Refused, match="outside"):
        verify_files(bundle, {"../secret.txt": record}, error=Refused, manifest="m.json", fix="-")
    with pytest.raises(Refused, match="outside"):
        verify_files(bundle, {str(outside): record}, error=Refused, manifest="m.json", fix="-")


def test_verify_bytes_returns_what_it_checked(tmp_path):
    path = tmp_path / "policy.onnx"
    path.write_bytes(b"graph")
    record = {"sha256": hashlib.sha256(b"graph").hexdigest()}
    assert verify_bytes(path, record, error=BundleError, manifest="manifest.json", fix="-") == b"graph"
    with pytest.raises(BundleError, match="does not match its manifest checksum"):
        verify_bytes(path, {"sha256": "0" * 64}, error=BundleError, manifest="manifest.json", fix="-")


@pytest.mark.parametrize("text, words", [(None, "no such thing"), ("{not json", "not valid JSON"),
                                         ("[1, 2]", "not an object")])
def test_read_json_object_refuses_missing_broken_and_non_object_files(tmp_path, text, words):
    path = tmp_path / "manifest.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(Refused, match=words):
        read_json_object(path, error=Refused, missing="no such thing", fix="re-export")


def test_welch_difference_with_one_episode_on_a_side_bounds_nothing():
    # A single return has no spread: the drop's CI is unbounded rather than a crash or a false precision.
    drop = welch_difference([10.0, 12.0, 11.0], [5.0])
    assert drop["mean"] == pytest.approx(6.0) and drop["ci95_low"] == float("-inf") and drop["n"] == 1
