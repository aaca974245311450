"""TrackingClient's experiments: made, read, searched, renamed, deleted, restored, tagged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._headers import Metadata
from ..exceptions import NotFoundError
from ..tracking.v1 import tracking_service_pb2 as api
from ..types import _tracking as types
from ..types._arguments import proto
from ..types._paging import ListOptions, OrderByField, PagedList, order_keys
from ..types._tracking import Experiment, ViewType
from .tracking_calls import (
    SEARCH_MAX_RESULTS_DEFAULT,
    TrackingCalls,
    apply_options,
    searched,
    tag_messages,
)

_EXPERIMENT_ORDER = {
    OrderByField.CREATE_TIME: "creation_time",
    OrderByField.UPDATE_TIME: "last_update_time",
    OrderByField.ID: "experiment_id",
}


class Experiments(TrackingCalls):
    """Mixed into TrackingClient."""

    async def create_experiment(
        self,
        name: str,
        artifact_location: str | None = None,
        tags: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> str:
        """Creates an experiment; returns its id.

        Raises:
            AlreadyExistsError: an experiment of that name exists (even deleted).
        """
        request = proto(
            api.CreateExperimentRequest,
            project=self.project,
            name=name,
            artifact_location=artifact_location or "",
            tags=tag_messages(tags),
        )
        reply = await self._transport.unary(
            self._stub.CreateExperiment, request, timeout=timeout, metadata=metadata
        )
        return str(reply.experiment.experiment_id)

    async def get_experiment(
        self,
        experiment_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Experiment:
        """Raises NotFoundError when there is no such experiment."""
        request = proto(
            api.GetExperimentRequest, project=self.project, experiment_id=str(experiment_id)
        )
        reply = await self._transport.unary(
            self._stub.GetExperiment, request, timeout=timeout, metadata=metadata
        )
        return types.experiment_from_proto(reply.experiment)

    async def get_experiment_by_name(
        self,
        name: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Experiment | None:
        """The experiment of that name, or None."""
        request = proto(api.GetExperimentByNameRequest, project=self.project, name=name)
        try:
            reply = await self._transport.unary(
                self._stub.GetExperimentByName, request, timeout=timeout, metadata=metadata
            )
        except NotFoundError:
            return None
        return types.experiment_from_proto(reply.experiment)

    async def search_experiments(
        self,
        view_type: int | str = ViewType.ACTIVE_ONLY,
        max_results: int | None = SEARCH_MAX_RESULTS_DEFAULT,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
        *,
        options: ListOptions | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[Experiment]:
        """Experiments, up to max_results of them.

        Args:
            view_type: ACTIVE_ONLY, DELETED_ONLY or ALL.
            max_results: how many to answer (1,000 by default, at most 50,000 as in
                MLflow), gathered from server pages of 1,000 until one comes back cut
                short to fit its message (then fewer, with the token of the rest); with
                options, their limit is one page's size (at most 1,000).
            filter_string: e.g. "name LIKE 'churn%' AND tags.team = 'growth'".
            order_by: keys among "name", "creation_time", "last_update_time" and
                "experiment_id", each optionally followed by ASC or DESC, each at most
                once, e.g. ["name ASC", "creation_time DESC"].
            page_token: the next_page_token of the previous page.
            options: ListOptions (for Pager); overrides max_results, page_token, order_by.
        """
        # The wire carries the keys in one string, separated by commas.
        order = ", ".join(order_keys(order_by))
        if options is not None:
            max_results, page_token, chosen = apply_options(options, _EXPERIMENT_ORDER)
            order = order if chosen is None else chosen

        async def page(size: int, token: str) -> tuple[list[Experiment], str]:
            request = proto(
                api.SearchExperimentsRequest,
                project=self.project,
                filter=filter_string or "",
                order_by=order,
                view_type=types.view_type_to_proto(view_type),
                page_size=size,
                page_token=token,
            )
            reply = await self._transport.unary(
                self._stub.SearchExperiments, request, timeout=timeout, metadata=metadata
            )
            found = [types.experiment_from_proto(e) for e in reply.experiments]
            return found, reply.next_page_token

        return await searched(page, options, max_results, page_token)

    async def rename_experiment(
        self,
        experiment_id: str,
        new_name: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(
            api.RenameExperimentRequest,
            project=self.project,
            experiment_id=str(experiment_id),
            new_name=new_name,
        )
        await self._transport.unary(
            self._stub.RenameExperiment, request, timeout=timeout, metadata=metadata
        )

    async def delete_experiment(
        self,
        experiment_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Soft-deletes the experiment; its runs are hidden with it until restored."""
        request = proto(
            api.DeleteExperimentRequest, project=self.project, experiment_id=str(experiment_id)
        )
        await self._transport.unary(
            self._stub.DeleteExperiment, request, timeout=timeout, metadata=metadata
        )

    async def restore_experiment(
        self,
        experiment_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(
            api.RestoreExperimentRequest, project=self.project, experiment_id=str(experiment_id)
        )
        await self._transport.unary(
            self._stub.RestoreExperiment, request, timeout=timeout, metadata=metadata
        )

    async def set_experiment_tag(
        self,
        experiment_id: str,
        key: str,
        value: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(
            api.SetExperimentTagRequest,
            project=self.project,
            experiment_id=str(experiment_id),
            key=key,
            value=str(value),
        )
        await self._transport.unary(
            self._stub.SetExperimentTag, request, timeout=timeout, metadata=metadata
        )

    async def delete_experiment_tag(
        self,
        experiment_id: str,
        key: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(
            api.DeleteExperimentTagRequest,
            project=self.project,
            experiment_id=str(experiment_id),
            key=key,
        )
        await self._transport.unary(
            self._stub.DeleteExperimentTag, request, timeout=timeout, metadata=metadata
        )
