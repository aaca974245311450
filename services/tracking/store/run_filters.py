"""What a run search may return, as SQL: the filter compiled to parameterized
conditions on a run (r) and its experiment (e), the lifecycle view, and the values a
search sorts on, NaN and missing ranked so that they sort last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ...common import filter_sql, filters
from ...common.filters import FilterError, Identifier
from ...common.sql import Params
from ..model import RUN_NAME_TAG, RunStatus, ViewType
from ..validation import is_run_id
from .runs import UNCLAIMED

ENTITIES = {
    "metrics": "metric",
    "metric": "metric",
    "params": "param",
    "param": "param",
    "parameters": "param",
    "parameter": "param",
    "tags": "tag",
    "tag": "tag",
    "attributes": "attribute",
    "attribute": "attribute",
    "attr": "attribute",
    "run": "attribute",
    "inputs": "input",
    "input": "input",
    "datasets": "dataset",
    "dataset": "dataset",
}
# The fields of a run's inputs a filter compares (tracking.run_inputs columns).
INPUT_FIELDS = ("kind", "name", "uri", "digest", "context")
# MLflow's `datasets.` fields: those of the run's inputs of kind 'dataset'.
DATASET_KIND = "dataset"
DATASET_FIELDS = ("name", "digest", "context")
# Attribute name -> (SQL expression, SQL type).
ATTRIBUTES = {
    "run_id": ("replace(r.run_id::text, '-', '')", "text"),
    "run_name": ("r.run_name", "text"),
    "status": ("r.status", "smallint"),
    "user_id": ("r.user_id", "text"),
    "start_time": ("r.start_time", "bigint"),
    "end_time": ("r.end_time", "bigint"),
    "artifact_uri": ("r.artifact_uri", "text"),
    "experiment_id": ("r.experiment_id", "bigint"),
}
# Text attributes that hold '' when unset (NOT NULL DEFAULT ''), which the client reads
# as unset (a run made without a user): filters and orders read them so too, as the
# registry's (filter_sql.empty_is_unset).
EMPTY_IS_UNSET = {"user_id"}
# Other names MLflow gives attributes, spelt as it accepts them (SearchUtils'
# _ALTERNATE_NUMERIC_ATTRIBUTES and _ALTERNATE_STRING_ATTRIBUTES).
ATTRIBUTE_ALIASES = {
    "created": "start_time",
    "Created": "start_time",
    "run name": "run_name",
    "Run name": "run_name",
    "Run Name": "run_name",
}
# params_by_key and tags_by_key hold each value's first VALUE_PREFIX characters (an
# index entry of the whole value could pass PostgreSQL's 2,704 bytes; migration 0009).
VALUE_PREFIX = 200
# The table of each entity's values, and its SQL type.
TABLES = {
    "metric": "tracking.latest_metrics",
    "param": "tracking.params",
    "tag": "tracking.tags",
}
TYPES = {"metric": "double precision", "param": "text", "tag": "text"}


@dataclass(frozen=True)
class RunQuery:
    """One SearchRuns call, checked."""

    project: str
    experiment_ids: Sequence[int]
    filter: str
    order_by: Sequence[str]
    view_type: ViewType
    page_size: int
    page_token: str


@dataclass(frozen=True)
class Scope:
    """The runs a query may return: the joins its filter looks values up with, the
    WHERE condition, and their parameters."""

    params: Params
    joins: str
    where: str
    # The placeholder of the searched experiments' ids (bigint[]).
    experiments: str


def run_scope(query: RunQuery, per_run: bool = False) -> Scope:
    """per_run: for a walk that tests one run at a time (its id r.run_id given). The
    run and its values are then looked up by primary key alone: the experiment and the
    keys are compared in a form no index serves (`+ 0`, `|| ''`), since without
    statistics PostgreSQL may pick runs_by_experiment or the (key, value) indexes for
    the lookup and read every entry of the experiment or the value for each run."""
    params = Params(query.project)
    experiments = params.add(list(query.experiment_ids), "bigint[]")
    experiment = "r.experiment_id + 0" if per_run else "r.experiment_id"
    where = ["r.project = $1", f"{experiment} = ANY({experiments})", _view(query.view_type)]
    lookups = filter_sql.Lookups(
        params, TABLES, ("run_id", "r.run_id"), per_owner=per_run, prefix=VALUE_PREFIX
    )
    inputs = _Inputs(params)
    node = parse_filter(query.filter)
    if node is not None:
        where.append(_compile(node, params, lookups, inputs))
    joins = " ".join([*lookups.joins, *inputs.joins()])
    return Scope(params, joins, " AND ".join(where), experiments)


def parse_filter(text: str) -> filters.Node | None:
    """A run filter's tree, fields named by their Cairn names (see _named)."""
    return _with_names(filters.parse(text, ENTITIES))


def parse_order(text: str) -> tuple[Identifier, bool]:
    """An order_by term of runs, its field named by its Cairn name (see _named)."""
    ident, ascending = filters.parse_order_by(text, ENTITIES)
    return _named(ident), ascending


def _with_names(node: filters.Node | None) -> filters.Node | None:
    return None if node is None else _renamed(node)


def _renamed(node: filters.Node) -> filters.Node:
    if isinstance(node, filters.BoolOp):
        return filters.BoolOp(node.op, tuple(_renamed(n) for n in node.operands))
    return replace(node, ident=_named(node.ident))


def _named(ident: Identifier) -> Identifier:
    """The field by its one name, whichever of MLflow's it is given by: the walks and
    the sort see `created` as the start_time it is."""
    # MLflow keeps a run's name as this tag too; Cairn keeps it as the name alone.
    if ident.entity == "tag" and ident.key == RUN_NAME_TAG:
        return Identifier("attribute", "run_name", ident.position)
    if ident.entity == "attribute" and ident.key in ATTRIBUTE_ALIASES:
        return replace(ident, key=ATTRIBUTE_ALIASES[ident.key])
    return ident


class _Inputs:
    """Terms on a run's inputs, of which a run has any number: each term holds when one
    of the inputs meets it (one of its datasets, for a `datasets.` term). All of them
    are answered by one lookup of the run's inputs, one boolean column per term."""

    def __init__(self, params: Params) -> None:
        self._params = params
        self._columns: list[str] = []

    def condition(self, node: filters.Comparison | filters.NullCheck) -> str:
        field = _input_field(node.ident)
        if isinstance(node, filters.NullCheck):
            value, is_null = f"ri.{field} <> ''", node.is_null
        else:  # an empty field is unset, as IS NULL reads it: no comparison matches it
            value = filter_sql.empty_is_unset(f"ri.{field}", node, self._params)
            is_null = False
        if node.ident.entity == "dataset":
            value = f"ri.kind = {self._params.add(DATASET_KIND)} AND ({value})"
        matched = f"coalesce(im.i{len(self._columns)}, false)"
        self._columns.append(f"bool_or({value})")
        return f"NOT {matched}" if is_null else matched

    def joins(self) -> list[str]:
        if not self._columns:
            return []
        columns = ", ".join(f"{sql} AS i{i}" for i, sql in enumerate(self._columns))
        return [
            f"LEFT JOIN LATERAL (SELECT {columns} FROM tracking.run_inputs ri "
            "WHERE ri.run_id = r.run_id) im ON TRUE"
        ]


def _input_field(ident: Identifier) -> str:
    fields = DATASET_FIELDS if ident.entity == "dataset" else INPUT_FIELDS
    if ident.key not in fields:
        known = ", ".join(fields)
        raise FilterError(ident.position, f"{ident.entity}s have {known}; not {ident.key!r}")
    return ident.key


def _view(view_type: ViewType) -> str:
    """The runs of the view, but those a garbage collection claimed (runs.UNCLAIMED):
    a claimed run is deleted for good, so the view of active runs, the default, leaves
    it out already, with no condition more for the planner to weigh."""
    active = "(r.lifecycle_stage = 1 AND e.lifecycle_stage = 1)"
    if view_type == ViewType.ALL:
        return UNCLAIMED
    return f"NOT {active} AND {UNCLAIMED}" if view_type == ViewType.DELETED_ONLY else active


def sort_values(
    terms: list[tuple[Identifier, bool]], params: Params, per_run: bool = False
) -> tuple[str, list[str]]:
    """Joins for the sort values, and the SELECT items of the sort key (see search._sort_key).
    per_run: look the values up by run id alone (see run_scope)."""
    key_column = "key || ''" if per_run else "key"
    joins, selected = [], []
    for i, (ident, _) in enumerate(terms):
        if ident.entity == "attribute":
            value_sql, sql_type = sort_attribute(ident)
        else:
            # A join, not a subquery per row: PostgreSQL can hash it in one pass.
            table, sql_type = TABLES[ident.entity], TYPES[ident.entity]
            joins.append(
                f"LEFT JOIN {table} o{i} "
                f"ON o{i}.run_id = r.run_id AND o{i}.{key_column} = {params.add(ident.key)}"
            )
            value_sql = f"o{i}.value"
        selected += [
            f"{_absence(value_sql, sql_type)} AS m{i}",
            f"{_valued(value_sql, sql_type)} AS v{i}",
        ]
    selected.append("r.run_id AS tiebreak")
    return " ".join(joins), selected


# How a run's metric ranks by its absence (the m columns): a value, then NaN, then no
# value, whichever the direction, as MLflow orders them. Other fields rank 0 with a
# value and 1 without.
VALUED, NAN, MISSING = 0, 1, 2


def _absence(value_sql: str, sql_type: str) -> str:
    """The rank of a sort value (for a metric VALUED, NAN or MISSING)."""
    if sql_type != "double precision":
        return f"({value_sql} IS NULL)::int"
    ranks = f"WHEN {value_sql} IS NULL THEN {MISSING} WHEN {value_sql} = 'NaN' THEN {NAN}"
    return f"(CASE {ranks} ELSE {VALUED} END)"


def _valued(value_sql: str, sql_type: str) -> str:
    """A sort value, NULL when ranked NaN or MISSING (ordered by run id alone then)."""
    return f"NULLIF({value_sql}, 'NaN')" if sql_type == "double precision" else value_sql


# Runs ordered by status sort by its name (FAILED, FINISHED, KILLED, RUNNING,
# SCHEDULED), as MLflow's, which stores the names, sorts them; the column holds numbers.
_STATUS_BY_NAME = "array_position(ARRAY[{}]::smallint[], r.status)".format(
    ", ".join(str(status.value) for status in sorted(RunStatus, key=lambda s: s.name))
)


def sort_attribute(ident: Identifier) -> tuple[str, str]:
    """An attribute's sort value (SQL expression, SQL type)."""
    if ident.key == "status":
        return _STATUS_BY_NAME, "int"
    value_sql, sql_type = attribute(ident)
    if ident.key in EMPTY_IS_UNSET:
        return f"NULLIF({value_sql}, '')", sql_type  # missing: sorted last
    return value_sql, sql_type


def attribute(ident: Identifier) -> tuple[str, str]:
    if ident.key not in ATTRIBUTES:
        known = ", ".join(ATTRIBUTES)
        raise FilterError(
            ident.position, f"unknown run attribute {ident.key!r}; use one of {known}"
        )
    return ATTRIBUTES[ident.key]


def _compile(
    node: filters.Node, params: Params, lookups: filter_sql.Lookups, inputs: _Inputs
) -> str:
    if isinstance(node, filters.BoolOp):
        operands = (_compile(n, params, lookups, inputs) for n in node.operands)
        return "(" + f" {node.op} ".join(operands) + ")"
    if node.ident.entity == "attribute":
        return _attribute_condition(node, params)
    if node.ident.entity in ("input", "dataset"):
        return inputs.condition(node)
    return lookups.condition(node, TYPES[node.ident.entity])


def _attribute_condition(node: filters.Comparison | filters.NullCheck, params: Params) -> str:
    column, sql_type = attribute(node.ident)
    if node.ident.key in EMPTY_IS_UNSET:
        return filter_sql.empty_is_unset(column, node, params)
    if isinstance(node, filters.NullCheck):
        return f"{column} IS {'' if node.is_null else 'NOT '}NULL"
    if node.ident.key == "status":
        node = _status_as_number(node)
    elif node.ident.key == "run_id":
        node = _lowered(node)
        if (keyed := _by_key(node, params)) is not None:
            return keyed
    return filter_sql.condition(column, node, params, sql_type)


def _by_key(node: filters.Comparison, params: Params) -> str | None:
    """`run_id =` or `IN` of whole run ids as a term on the runs' key, which its index
    serves (None for any other term): compared as text, the key without its dashes,
    every run of the experiments searched was read (20 ids among 10,000 runs: 9.7-10.1
    ms a search, 3.9 by the key; `make bench-filters`), as MLflow's
    `attributes.run_id IN (...)`, a table's runs, asks often."""
    if node.op not in ("=", "IN") or not all(map(is_run_id, node.values)):
        return None
    ids = params.add(list(node.values), "uuid[]")
    return f"{'NOT ' if node.negated else ''}(r.run_id = ANY({ids}))"


def _lowered(node: filters.Comparison) -> filters.Comparison:
    """A run id in a filter, read in any case as every call reads one (the column holds
    lower case): `run_id = '<ID>'` found nothing of the run get_run('<ID>') returns."""
    lowered = tuple(v.lower() if isinstance(v, str) else v for v in node.values)
    return replace(node, value=lowered if isinstance(node.value, tuple) else lowered[0])


def _status_as_number(node: filters.Comparison) -> filters.Comparison:
    """attributes.status compares with status names; the column holds their numbers."""
    if node.op in ("LIKE", "ILIKE"):
        node = _statuses_like(node)
    if node.op not in ("=", "!=", "IN"):
        raise FilterError(node.ident.position, "status supports =, !=, IN, LIKE and ILIKE")
    names = node.values
    numbers = []
    for name in names:
        # In ASCII alone: 'ﬁnished' (a ligature) upper-cases to FINISHED.
        if (
            not isinstance(name, str)
            or not name.isascii()
            or name.upper() not in RunStatus.__members__
        ):
            known = ", ".join(RunStatus.__members__)
            raise FilterError(node.ident.position, f"status is one of {known}")
        numbers.append(float(RunStatus[name.upper()]))
    value = tuple(numbers) if node.op == "IN" else numbers[0]
    return filters.Comparison(node.ident, node.op, value, node.negated)


def _statuses_like(node: filters.Comparison) -> filters.Comparison:
    """A LIKE term on the status as the IN list of the names it matches, as MLflow,
    which stores the names, matches them (LIKE in their upper case)."""
    assert isinstance(node.value, str)  # the parser reads a LIKE pattern as a string
    ignore_case = node.op == "ILIKE"
    names = tuple(
        n for n in RunStatus.__members__ if filters.like_matches(node.value, n, ignore_case)
    )
    return filters.Comparison(node.ident, "IN", names, node.negated)
