"""Task specs and GLUE loading: shipped TSVs, synthetic GLUE-layout files, errors, subsets.

Never touches the network: the Hub path is exercised with a fake `datasets` module.
"""

from __future__ import annotations

import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from fishtune.data import DEFAULT_GLUE_DIR, Example, load_split, local_path
from fishtune.errors import ConfigError, DataError
from fishtune.tasks import TASKS, get_task


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def write_tsv(path: Path, lines: list[str]) -> Path:
    """Write tab-joined lines (already containing tabs) as a GLUE TSV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def fake_datasets(monkeypatch: pytest.MonkeyPatch, load_dataset) -> None:
    """Make `import datasets` inside fishtune.data return a stub with `load_dataset`."""
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))


# --- tasks -----------------------------------------------------------------------------------


def test_all_nine_tasks() -> None:
    assert sorted(TASKS) == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("cola", ("unacceptable", "acceptable")),
        ("sst2", ("negative", "positive")),
        ("mrpc", ("not_equivalent", "equivalent")),
        ("qqp", ("not_duplicate", "duplicate")),
        ("mnli", ("entailment", "neutral", "contradiction")),
        ("qnli", ("entailment", "not_entailment")),
        ("rte", ("entailment", "not_entailment")),
        ("wnli", ("not_entailment", "entailment")),
    ],
)
def test_label_ids_match_hub(name: str, labels: tuple[str, ...]) -> None:
    task = get_task(name)
    assert task.label_names == labels
    assert task.num_labels == len(labels)
    assert not task.is_regression


def test_stsb_is_regression() -> None:
    task = get_task("stsb")
    assert task.is_regression and task.num_labels == 1 and task.label_names == ()
    assert task.metrics == ("pearson", "spearman")


def test_task_fields() -> None:
    mnli = get_task("mnli")
    assert mnli.eval_splits == ("dev_matched", "dev_mismatched")
    assert mnli.text_fields == ("premise", "hypothesis")
    assert get_task("qqp").text_fields == ("question1", "question2")
    assert get_task("cola").text_fields == ("sentence",)
    assert get_task("mrpc").metrics == ("f1", "accuracy")
    assert get_task("cola").metrics == ("matthews",)
    assert get_task("SST-2") is TASKS["sst2"] and get_task("STS-B") is TASKS["stsb"]


def test_unknown_task() -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'boolq'; choose one of: cola, mnli, mrpc"):
        get_task("boolq")


# --- shipped TSVs ----------------------------------------------------------------------------

SHIPPED = [
    ("cola", "train", 8551),
    ("cola", "dev", 1043),
    ("sst2", "train", 67349),
    ("sst2", "dev", 872),
    ("mrpc", "train", 3668),
    ("mrpc", "dev", 408),
    ("rte", "train", 2490),
    ("rte", "dev", 277),
    ("stsb", "train", 5749),
    ("stsb", "dev", 1500),
    ("qnli", "dev", 5463),
    ("wnli", "train", 635),
    ("wnli", "dev", 71),
]


@pytest.mark.parametrize(("name", "split", "rows"), SHIPPED)
def test_shipped_row_counts(name: str, split: str, rows: int) -> None:
    examples = load_split(get_task(name), split, source="local")
    assert len(examples) == rows
    assert all(ex.text_a for ex in examples)
    assert all((ex.text_b is None) == (len(get_task(name).text_fields) == 1) for ex in examples)


@pytest.mark.parametrize(
    ("name", "split", "counts"),
    [
        ("mrpc", "dev", {1: 279, 0: 129}),
        ("mrpc", "train", {1: 2474, 0: 1194}),
        ("rte", "dev", {0: 146, 1: 131}),  # entailment -> id 0
        ("qnli", "dev", {0: 2702, 1: 2761}),
        ("wnli", "dev", {0: 40, 1: 31}),  # local 1 = entailment = Hub id 1
        ("cola", "dev", {1: 721, 0: 322}),
        ("sst2", "dev", {1: 444, 0: 428}),
    ],
)
def test_shipped_label_distribution(name: str, split: str, counts: dict[int, int]) -> None:
    labels = Counter(ex.label for ex in load_split(get_task(name), split, source="local"))
    assert dict(labels) == counts
    assert all(isinstance(label, int) for label in labels)


def test_default_dir_is_repo_data() -> None:
    assert DEFAULT_GLUE_DIR == Path(__file__).resolve().parent.parent / "data" / "glue"
    assert local_path(get_task("mrpc"), "dev") == DEFAULT_GLUE_DIR / "MRPC" / "dev.tsv"


def test_mrpc_bom_header_and_bare_quote() -> None:
    # dev.tsv line 2: label 1, second sentence opens a quote that is never closed.
    first = load_split(get_task("mrpc"), "dev", source="local")[0]
    assert first == Example(
        "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
        '" The foodservice pie business does not fit our long-term growth strategy .',
        1,
    )


def test_mrpc_train_row_with_unbalanced_quote_is_kept() -> None:
    # train.tsv line 93 (ids 2750203/2750153), the row some GLUE copies lost.
    example = load_split(get_task("mrpc"), "train", source="local")[91]
    assert example.text_a == 'Officials at Brandeis said this was an " extremely heartrending " time for the campus .'
    assert example.text_b == '" This is an extremely heartrending time for the entire Brandeis University community .'
    assert example.label == 1


def test_cola_has_no_header() -> None:
    examples = load_split(get_task("cola"), "dev", source="local")
    assert examples[0] == Example("The sailors rode the breeze clear of the rocks.", None, 1)


def test_sst2_keeps_text_verbatim() -> None:
    # SST-2 sentences end in a space, as on the Hub.
    assert load_split(get_task("sst2"), "train", source="local")[0] == Example(
        "hide new secretions from the parental units ", None, 0
    )


def test_stsb_scores_are_floats() -> None:
    examples = load_split(get_task("stsb"), "dev", source="local")
    assert examples[0] == Example("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0)
    assert examples[1].label == 4.75
    assert all(isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0 for ex in examples)


# --- synthetic GLUE-layout files -------------------------------------------------------------

MNLI_COLS = "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse"


def mnli_lines(labels: list[str], n_label_cols: int) -> list[str]:
    """An MNLI TSV: train has label1 only, the dev files label1..label5, then gold_label."""
    label_cols = [f"label{i}" for i in range(1, n_label_cols + 1)]
    header = "\t".join([*MNLI_COLS.split(), "sentence1", "sentence2", *label_cols, "gold_label"])
    rows = [
        "\t".join([str(i), "1", "1e", "fiction", "( p )", "( h )", "(ROOT p)", "(ROOT h)", f"premise {i}",
                   f'hypo "{i}', *[gold] * n_label_cols, gold])
        for i, gold in enumerate(labels)
    ]
    return [header, *rows]


def test_synthetic_mnli(tmp_path: Path) -> None:
    task = get_task("mnli")
    write_tsv(tmp_path / "MNLI" / "train.tsv", mnli_lines(["neutral", "entailment", "contradiction"], 1))
    write_tsv(tmp_path / "MNLI" / "dev_matched.tsv", mnli_lines(["contradiction", "neutral"], 5))
    write_tsv(tmp_path / "MNLI" / "dev_mismatched.tsv", mnli_lines(["entailment"], 5))
    train = load_split(task, "train", source="local", data_dir=tmp_path)
    assert [ex.label for ex in train] == [1, 0, 2]
    assert train[2] == Example("premise 2", 'hypo "2', 2)
    assert [ex.label for ex in load_split(task, "dev_matched", data_dir=tmp_path)] == [2, 1]
    assert [ex.label for ex in load_split(task, "dev_mismatched", data_dir=tmp_path)] == [0]


def test_synthetic_qqp(tmp_path: Path) -> None:
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    write_tsv(tmp_path / "QQP" / "train.tsv", [header, "0\t1\t2\tHow?\tWhy?\t0", "1\t3\t4\tA\tB\t1"])
    write_tsv(tmp_path / "QQP" / "dev.tsv", [header, '7\t8\t9\tIs "it" real?\tIs it?\t1'])
    task = get_task("qqp")
    assert load_split(task, "train", data_dir=tmp_path) == [Example("How?", "Why?", 0), Example("A", "B", 1)]
    assert load_split(task, "dev", data_dir=tmp_path) == [Example('Is "it" real?', "Is it?", 1)]


def test_synthetic_qnli_train(tmp_path: Path) -> None:
    write_tsv(
        tmp_path / "QNLI" / "train.tsv",
        ["index\tquestion\tsentence\tlabel", "0\tQ0?\tS0.\tnot_entailment", "1\tQ1?\tS1.\tentailment"],
    )
    examples = load_split(get_task("qnli"), "train", source="local", data_dir=str(tmp_path))
    assert examples == [Example("Q0?", "S0.", 1), Example("Q1?", "S1.", 0)]


def test_crlf_and_blank_trailing_line(tmp_path: Path) -> None:
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_bytes(b"sentence\tlabel\r\ngood .\t1\r\nbad .\t0\r\n\r\n")
    examples = load_split(get_task("sst2"), "dev", data_dir=tmp_path)
    assert examples == [Example("good .", None, 1), Example("bad .", None, 0)]


def test_blank_lines_before_the_header_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_text("\n\nsentence\tlabel\ngood .\t1\n", encoding="utf-8")
    assert load_split(get_task("sst2"), "dev", data_dir=tmp_path) == [Example("good .", None, 1)]


def test_hub_float32_scores_give_the_tsv_digest() -> None:
    """The Hub stores STS-B's scores as float32: 2.4 comes back as 2.4000000953674316."""
    import numpy as np

    from fishtune.data import examples_digest

    tsv = [Example("a", "b", 2.4), Example("c", "d", 2.33333333333333)]
    hub = [Example(e.text_a, e.text_b, float(np.float32(e.label))) for e in tsv]
    assert hub != tsv and examples_digest(hub) == examples_digest(tsv)
    assert examples_digest([Example("a", "b", 2.5)]) != examples_digest(tsv[:1])
    assert examples_digest(tsv, legacy=True) != examples_digest(hub, legacy=True)  # what older records hold
    assert examples_digest([Example("a", None, 1)]) == examples_digest([Example("a", None, 1)], legacy=True)


# --- errors ----------------------------------------------------------------------------------

RTE_HEADER = "index\tsentence1\tsentence2\tlabel"


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_split(get_task("mrpc"), "train", source="local", data_dir=tmp_path)
    message = str(err.value)
    assert "'mrpc'" in message and str(tmp_path / "MRPC" / "train.tsv") in message
    assert "data.dir=" in message and "data.source=hub" in message


def test_wrong_header(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "RTE" / "train.tsv", ["index\tpremise\thypothesis\tlabel", "0\ta\tb\tentailment"])
    with pytest.raises(DataError) as err:
        load_split(get_task("rte"), "train", data_dir=tmp_path)
    message = str(err.value)
    assert f"{path}, line 1" in message
    assert "'sentence1', 'sentence2', 'label'" in message


def test_a_repeated_column_is_refused(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "RTE" / "train.tsv", ["\n" + RTE_HEADER + "\tlabel", "0\ta\tb\tentailment\tnot_entailment"])
    with pytest.raises(DataError, match=r"line 2: wrong header: column\(s\) 'label' appear more than once") as err:
        load_split(get_task("rte"), "train", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_malformed_row(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "RTE" / "dev.tsv", [RTE_HEADER, "0\ta\tb\tentailment", "1\ta b\tentailment"])
    with pytest.raises(DataError, match="expected 4 tab-separated columns, found 3") as err:
        load_split(get_task("rte"), "dev", data_dir=tmp_path)
    assert f"{path}, line 3" in str(err.value)


def test_unknown_label(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "RTE" / "dev.tsv", [RTE_HEADER, "0\ta\tb\tmaybe"])
    with pytest.raises(DataError) as err:
        load_split(get_task("rte"), "dev", data_dir=tmp_path)
    assert str(err.value) == f"{path}, line 2: unknown label 'maybe'; valid labels: entailment, not_entailment"


def test_non_float_score(tmp_path: Path) -> None:
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    path = write_tsv(tmp_path / "STS-B" / "dev.tsv", [header, "0\tg\tf\ty\t0\tn\tn\ta\tb\thigh"])
    with pytest.raises(DataError, match=r"line 2: score 'high' is not a number") as err:
        load_split(get_task("stsb"), "dev", data_dir=tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("score", ["nan", "inf", "5.5", "-0.1"])
def test_a_score_off_the_sts_scale_is_refused(tmp_path: Path, score: str) -> None:
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    write_tsv(tmp_path / "STS-B" / "dev.tsv", [header, "0\tg\tf\ty\t0\tn\tn\ta\tb\t3.2", f"1\tg\tf\ty\t0\tn\tn\ta\tb\t{score}"])
    with pytest.raises(DataError, match=rf"line 3: score '{score}' is outside \[0, 5\]"):
        load_split(get_task("stsb"), "dev", data_dir=tmp_path)


def test_a_row_the_csv_module_cannot_read_is_a_data_error(tmp_path: Path) -> None:
    huge = "x" * 200_000   # over the csv module's field size limit (131,072)
    path = write_tsv(tmp_path / "RTE" / "dev.tsv", [RTE_HEADER, "0\ta\tb\tentailment", f"1\t{huge}\tb\tentailment"])
    with pytest.raises(DataError, match=r"line 3: not a GLUE TSV row") as err:
        load_split(get_task("rte"), "dev", data_dir=tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("task_name", "glue_dir", "content"),
    [("rte", "RTE", RTE_HEADER + "\n"), ("rte", "RTE", ""), ("cola", "CoLA", "")],
)
def test_empty_split(tmp_path: Path, task_name: str, glue_dir: str, content: str) -> None:
    path = tmp_path / glue_dir / "dev.tsv"
    path.parent.mkdir()
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="empty split") as err:
        load_split(get_task(task_name), "dev", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_unknown_source_and_split() -> None:
    with pytest.raises(ConfigError, match="unknown data source 'web'; choose one of: auto, local, hub"):
        load_split(get_task("rte"), "dev", source="web")
    with pytest.raises(ConfigError, match="unknown split 'dev' for task 'mnli'"):
        load_split(get_task("mnli"), "dev")
    with pytest.raises(ConfigError, match="max_samples"):
        load_split(get_task("rte"), "dev", max_samples=0)


# --- Hub (faked, never the network) ----------------------------------------------------------


def test_hub_failure_is_one_line_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\n(more detail)")

    fake_datasets(monkeypatch, offline)
    with pytest.raises(DataError) as err:  # auto: no local file, so it tries the Hub
        load_split(get_task("qqp"), "train", data_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "unreachable" in message and "ConnectionError" in message
    assert str(tmp_path / "QQP" / "train.tsv") in message


def test_hub_rows_and_split_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(path: str, name: str, split: str) -> list[dict[str, object]]:
        calls.append((path, name, split))
        return [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}]

    fake_datasets(monkeypatch, load_dataset)
    examples = load_split(get_task("mnli"), "dev_mismatched", source="hub", data_dir=tmp_path)
    assert examples == [Example("p", "h", 2)]
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]


def test_hub_source_ignores_local_files(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_datasets(monkeypatch, lambda *a, **k: [{"sentence1": "a", "sentence2": "b", "label": 3.5, "idx": 0}])
    assert load_split(get_task("stsb"), "dev", source="hub") == [Example("a", "b", 3.5)]


# --- max_samples -----------------------------------------------------------------------------


def test_max_samples_subset() -> None:
    task = get_task("rte")
    full = load_split(task, "dev", source="local")
    a = load_split(task, "dev", source="local", max_samples=20, seed=1)
    assert a == load_split(task, "dev", source="local", max_samples=20, seed=1)
    assert a != load_split(task, "dev", source="local", max_samples=20, seed=2)
    assert len(a) == 20
    positions = [full.index(ex) for ex in a]
    assert positions == sorted(positions)  # original order kept
    assert load_split(task, "dev", source="local", max_samples=10_000) == full
