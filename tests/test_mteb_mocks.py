"""mteb's own mock tasks (mteb.mocks): an outside check that our encoder is a valid mteb encoder."""

import mteb
import pytest
from conftest import tiny_model_cfg

from moee_exp.features.featurize import Featurizer
from moee_exp.features.prompts import TEMPLATES
from moee_exp.scoring.encoder import MoEEEncoder


@pytest.mark.parametrize("kind", ["moee_sum", "moee_concat"])
def test_all_text_mock_tasks_pass(kind):
    featurizer = Featurizer(tiny_model_cfg("tiny"), TEMPLATES["prompteol"], progress=False)
    results = mteb.mock_run(MoEEEncoder(featurizer, kind, alpha=0.5, standardize="text"))
    ran = {name: status for name, status in results.items() if status is not None}
    assert len(ran) >= 20, "the text mock tasks should be compatible with our encoder"
    failed = {name: status.exception[:200] for name, status in ran.items() if not hasattr(status, "get_score")}
    assert not failed
    assert results.all_passed
