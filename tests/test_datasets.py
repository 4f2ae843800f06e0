from __future__ import annotations

import json

import numpy as np
import pytest

from qgate.datasets import BUILTIN_CORPORA, Dataset, dataset_from_path, load_dataset, make_chunks
from qgate.errors import CheckError, UsageError
from qgate.policy.model import DatasetSpec


@pytest.mark.parametrize("name", sorted(BUILTIN_CORPORA))
def test_builtin_corpora_are_long_varied_text(name):
    data = load_dataset(DatasetSpec(name=name))
    assert data.domain == name and len(data.digest) == 64
    paragraphs = [p for p in data.text.split("\n\n") if len(p.strip()) >= 80]  # not separators
    assert len(paragraphs) >= 10
    assert len(set(paragraphs)) == len(paragraphs)  # repeated text makes perplexity meaningless
    assert len(data.text) >= 9000


def test_scripts_are_what_the_names_say():
    def share(text: str, low: int, high: int) -> float:
        letters = [c for c in text if c.isalpha()]
        return sum(low <= ord(c) <= high for c in letters) / len(letters)

    assert share(load_dataset(DatasetSpec(name="ru")).text, 0x400, 0x4FF) > 0.95
    assert share(load_dataset(DatasetSpec(name="ar")).text, 0x600, 0x6FF) > 0.95
    assert share(load_dataset(DatasetSpec(name="hi")).text, 0x900, 0x97F) > 0.95
    assert share(load_dataset(DatasetSpec(name="ja")).text, 0x3000, 0x9FFF) > 0.9
    assert any(c in load_dataset(DatasetSpec(name="pl")).text for c in "ąęłśżź")


def test_chunks_follow_llama_perplexity(tmp_path):
    data = Dataset("t", "abcdefghij" * 10, "d", "test")
    chunks = make_chunks(lambda text: [1] + [ord(c) for c in text], 1, data, n_ctx=16, max_chunks=3)
    assert chunks.shape == (3, 16)
    assert np.all(chunks[:, 0] == 1)
    assert chunks[1, 1] == ord("abcdefghij"[16 % 10 - 1 + 1])  # consecutive windows, no overlap
    with pytest.raises(CheckError, match="fewer than one chunk"):
        make_chunks(lambda text: [1, 2, 3], 1, data, n_ctx=16, max_chunks=3)


def test_user_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("plain text " * 20)
    assert load_dataset(dataset_from_path(str(text))).domain == "notes"
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n")
    spec = dataset_from_path(f"legal={jsonl}")
    assert load_dataset(spec).text == "one\n\ntwo" and load_dataset(spec).domain == "legal"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 1}\n')
    with pytest.raises(UsageError, match=r"bad\.jsonl:1"):
        load_dataset(dataset_from_path(str(bad)))
    with pytest.raises(UsageError, match="not found"):
        dataset_from_path(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(UsageError, match="empty"):
        load_dataset(dataset_from_path(str(empty)))
