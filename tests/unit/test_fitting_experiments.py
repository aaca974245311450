"""fitting_experiments keeps a SearchExperiments response within its budget, whatever
the experiments' strings (characters of one to four bytes in UTF-8)."""

from datetime import UTC

from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn_server.tracking import convert
from cairn_server.tracking.fitting import fitting_experiments
from cairn_server.tracking.model import Experiment, LifecycleStage
from cairn_server.tracking.store.experiments import TagSize
from tests.unit.utf8 import text

tags = st.dictionaries(text, text, max_size=6)
experiments = st.lists(
    st.builds(
        Experiment,
        project=st.just("default"),
        experiment_id=st.integers(1, 2**63 - 1).map(str),
        name=text,
        artifact_location=text,
        lifecycle_stage=st.sampled_from(LifecycleStage),
        creation_time=st.datetimes(timezones=st.just(UTC)),
        last_update_time=st.datetimes(timezones=st.just(UTC)),
        tags=tags,
    ),
    min_size=1,
    max_size=8,
)


def _size(found: list[Experiment]) -> int:
    return api.SearchExperimentsResponse(experiments=map(convert.experiment, found)).ByteSize()


@settings(max_examples=100, deadline=None)
@given(experiments, st.floats(0.0, 1.2))
def test_the_experiments_kept_fit_the_budget(found: list[Experiment], share: float) -> None:
    budget = int(_size(found) * share)
    untagged = [Experiment(**{**vars(e), "tags": {}}) for e in found]
    sizes = [_tag_size(e) for e in found]
    kept = fitting_experiments(untagged, sizes, budget)
    assert 1 <= kept <= len(found)
    if kept > 1:
        assert _size(found[:kept]) <= budget


@settings(max_examples=30)
@given(experiments)
def test_a_page_within_its_budget_is_kept_whole(found: list[Experiment]) -> None:
    sizes = [_tag_size(e) for e in found]
    assert fitting_experiments(found, sizes, 2**40) == len(found)


def _tag_size(experiment: Experiment) -> TagSize:
    """What the store reads of an experiment's tags: their keys' and values' bytes in
    UTF-8, and how many there are."""
    tags = experiment.tags
    strings = sum(len(key.encode()) + len(value.encode()) for key, value in tags.items())
    return TagSize(strings, len(tags))
