"""tasks=mteb_eng_v2 is mteb's own MTEB(eng, v2), as the benchmark defines its tasks, and dry-runs offline."""

import mteb
import pytest
import yaml
from conftest import ROOT

from moee_exp.errors import UnknownTaskError
from moee_exp.scoring.tasks import get_tasks

SET = yaml.safe_load((ROOT / "conf/tasks/mteb_eng_v2.yaml").read_text())


def test_task_set_is_the_registry_benchmark():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmark_task_set import task_set_yaml

    bench = mteb.get_benchmark(SET["benchmark"])
    assert SET["names"] == [t.metadata.name for t in bench.tasks]
    assert (ROOT / "conf/tasks/mteb_eng_v2.yaml").read_text() == task_set_yaml("MTEB(eng, v2)", "mteb_eng_v2")
    assert "Retrieval" in {t.metadata.type for t in bench.tasks}


def test_benchmark_tasks_keep_the_benchmarks_subsets_and_splits():
    (sts17, massive) = get_tasks(["STS17", "MassiveIntentClassification"], benchmark=SET["benchmark"])
    assert sts17.hf_subsets == ["en-en"] and massive.hf_subsets == ["en"] and massive.eval_splits == ["test"]
    (plain,) = get_tasks(["STS17"])  # without the benchmark: every language pair
    assert len(plain.hf_subsets) > 1
    with pytest.raises(UnknownTaskError, match="not tasks of mteb benchmark"):
        get_tasks(["STS16"], benchmark=SET["benchmark"])
    with pytest.raises(UnknownTaskError, match="not an mteb benchmark"):
        get_tasks(["STS17"], benchmark="MTEB(nowhere)")


def test_every_task_gets_synthetic_data_of_its_class():
    from moee_exp.scoring.synthetic_tasks import generate

    tasks = get_tasks(SET["names"], data="synthetic", benchmark=SET["benchmark"])
    for task in tasks:
        data = generate(task, "small")
        subsets = set(data) if task.metadata.is_multilingual or task.metadata.type in ("Retrieval", "Reranking") \
            else None
        if subsets is not None and task.metadata.is_multilingual:
            assert subsets == set(task.hf_subsets), task.metadata.name


@pytest.mark.parametrize("name", ["ArguAna", "STS17", "MassiveIntentClassification"])
def test_dry_run_scores_retrieval_and_filtered_tasks_on_the_tiny_model(name):
    from conftest import tiny_model_cfg

    from moee_exp.features.featurize import Featurizer
    from moee_exp.features.prompts import TEMPLATES
    from moee_exp.scoring.encoder import MoEEEncoder

    (task,) = get_tasks([name], data="synthetic", benchmark=SET["benchmark"])
    encoder = MoEEEncoder(Featurizer(tiny_model_cfg(), TEMPLATES["none"], progress=False), "moee_sum")
    (result,) = mteb.evaluate(encoder, task, cache=None, co2_tracker=False, show_progress_bar=False).task_results
    scored = {s["hf_subset"] for split in result.scores.values() for s in split}
    assert scored == set(task.hf_subsets)
    assert set(result.scores) == set(task.eval_splits)
    main = [s["main_score"] for split in result.scores.values() for s in split]
    assert all(0 <= m <= 1 for m in main)
