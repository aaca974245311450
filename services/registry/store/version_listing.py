"""Lists of model versions: their filters and orders, and the plans that keep pages cheap."""

from __future__ import annotations

import asyncpg

from ...common import filters, paging
from ...common.sql import Params
from ..model import ModelVersion
from .common import id_or_none
from .listing import FILTER_ENTITIES, STATE_NUMBERS, Listing, Named
from .version_rows import COLUMNS, with_aliases

# What a version `q` of a page brings beside itself: its aliases (bytes and entries).
_BRINGS = """SELECT coalesce(sum(octet_length(a.alias)), 0) AS bytes, count(*) AS entries
    FROM registry.aliases a WHERE a.model_version_id = q.id"""
# Lists join each version's model `m`: a filter on its name finds the model by the
# (project, name) index, then its versions; an order by it walks the models by name.
# A subquery per version read and sorted every version of the project.
_MODEL_NAME = "m.name"
_LISTED = f"""SELECT {COLUMNS} FROM registry.model_versions v
    JOIN registry.registered_models m ON m.id = v.registered_model_id AND m.project = v.project"""
# A version's stage and state as filters name them (`stage = 'Production'`).
_STAGE = Named("v.stage", {"None": 0, "Staging": 1, "Production": 2, "Archived": 3})
_STATE = Named("v.state", STATE_NUMBERS)
_LISTING = Listing(
    "v",
    {
        # MLflow's meaning: the registered model's name; the version's own is version_name.
        "name": (_MODEL_NAME, "text"),
        "model_name": (_MODEL_NAME, "text"),
        "version_name": ("v.name", "text"),
        "version": ("v.version", "bigint"),
        "version_number": ("v.version", "bigint"),
        "run_id": ("v.source_run_id", "text"),
        "source_run_id": ("v.source_run_id", "text"),
        "source_uri": ("v.source_uri", "text"),
        "source_path": ("v.source_uri", "text"),
        "author": ("v.author", "text"),
        "description": ("v.description", "text"),
        "external_id": ("v.external_id", "text"),
        "registered_model_id": ("v.registered_model_id", "bigint"),
        "state": (_STATE.text, "text"),
        "stage": (_STAGE.text, "text"),
        "current_stage": (_STAGE.text, "text"),
        "id": ("v.id", "bigint"),
    },
    # MLflow's "name": the registered model's, which COLUMNS reads as model_name.
    orders={"version": "bigint", "name": (_MODEL_NAME, "text", "model_name")},
    # As MLflow's search_model_versions orders them: a model's versions newest first.
    ties={"name": (paging.SortColumn("v.version", False, "bigint", "version"),)},
    empty_is_unset=("v.source_run_id", "v.source_uri", "v.author", "v.description"),
    named=(_STAGE, _STATE),
    quoted_numbers=("v.version", "v.id", "v.registered_model_id"),
    run_ids=("v.source_run_id",),
)
# Orders an index of one model's versions serves, (registered_model_id, version), (...,
# id) or (..., update_time, id): MLflow's "name" orders them by version (see _LISTING's
# ties), and its search_model_versions by update time unless told otherwise.
_BY_MODEL_INDEX = ("name", "version", "id", "update_time")
# The filter's fields that name a version's registered model.
_MODEL_NAME_FIELDS = ("name", "model_name")


class VersionListing:
    """Pages of a project's versions, of one model or of any."""

    _pool: asyncpg.Pool

    async def list_page(
        self,
        project: str,
        model_id: str,
        filter_text: str,
        order_by: str,
        page_size: int,
        page_token: str,
    ) -> paging.ListPage[ModelVersion]:
        params = Params(project)
        where = ["v.project = $1", "m.project = $1", _LISTING.where(filter_text, params)]
        named = _named_models(filter_text)
        one_model = bool(model_id) or (named is not None and len(set(named)) == 1)
        query = _LISTED
        if model_id:
            where.append(f"v.registered_model_id = {params.add(id_or_none(model_id) or -1)}")
        elif one_model and named and _LISTING.field(order_by) in _BY_MODEL_INDEX:
            where.append(f"v.registered_model_id = ({_model_named(named[0], params)})")
        elif named is not None:
            query = _listed_of(named, params)
        async with self._pool.acquire() as conn:
            page = await _LISTING.page(
                conn,
                query,
                where,
                params,
                order_by,
                page_size,
                page_token,
                ["versions", project, model_id, filter_text],
                brings=_BRINGS,
                one_valued=("name",) if one_model else (),
            )
            return page.of(await with_aliases(conn, page.items))


def _named_models(filter_text: str) -> list[str] | None:
    """The model names a filter requires of every version it keeps (MLflow's
    `name = 'm'`, or `name IN (...)`, ANDed with anything), or None."""
    node = filters.parse(filter_text, FILTER_ENTITIES)
    terms = node.operands if isinstance(node, filters.BoolOp) and node.op == "AND" else [node]
    for term in terms:
        if (
            isinstance(term, filters.Comparison)
            and term.ident.entity == "attribute"
            and term.ident.key in _MODEL_NAME_FIELDS
            and term.op in ("=", "IN")
            and not term.negated
        ):
            values = term.value if isinstance(term.value, tuple) else (term.value,)
            return [str(value) for value in values]
    return None


def _model_named(name: str, params: Params) -> str:
    """SQL of the id of the project's ($1) model named so (NULL when none): one value,
    so the planner reads the model's versions by an index of them in the page's order
    (the fence of _listed_of read and sorted all of them, 20,000 rows for a page of 5)."""
    return f"""SELECT n.id FROM registry.registered_models n
        WHERE n.project = $1 AND n.name = {params.add(name)}"""


def _listed_of(names: list[str], params: Params) -> str:
    """_LISTED over the versions of the named models only, read by model: a version of
    another model never passes the filter. The fence (OFFSET 0) keeps the planner from
    walking every version of the project in the page's order instead, hoping to meet
    the few it keeps early (it read 22,000 rows for a page of 5); each version's model
    is looked up from the version (a lateral lookup, fenced too), which keeps it from
    reading the versions again for each model named (the versions of n models, n
    times, in a nested loop over them)."""
    models = f"""ARRAY(SELECT n.id FROM registry.registered_models n
                      WHERE n.project = $1 AND n.name = ANY({params.add(names, "text[]")}))"""
    return f"""SELECT {COLUMNS} FROM (
            SELECT * FROM registry.model_versions WHERE registered_model_id = ANY({models})
            OFFSET 0) v
        CROSS JOIN LATERAL (
            SELECT * FROM registry.registered_models n
            WHERE n.id = v.registered_model_id AND n.project = v.project OFFSET 0) m"""
