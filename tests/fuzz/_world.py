"""A project with something of every kind in it, so fuzzed calls that name real ids,
paths and page tokens get past the lookups into the code behind them.

Seeding goes through the generated stubs with the admin key: it depends on the wire
contract only, as the fuzzing does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from cairn.artifacts.v1 import artifacts_pb2, artifacts_service_pb2, artifacts_service_pb2_grpc
from cairn.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from cairn.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from cairn.tracking.v1 import tracking_pb2, tracking_service_pb2, tracking_service_pb2_grpc

from . import _values as values
from ._messages import Known
from ._probes import Keys
from ._rpc import Metadata

OBJECT_PATHS = ("data/a.txt", "data/b.txt", "models/m.bin")
# List requests whose first page (one item) gives a real next_page_token.
LIST_RPCS = (
    "/cairn.tracking.v1.TrackingService/SearchExperiments",
    "/cairn.tracking.v1.TrackingService/SearchRuns",
    "/cairn.registry.v1.RegistryService/ListRegisteredModels",
    "/cairn.registry.v1.RegistryService/ListModelVersions",
    "/cairn.registry.v1.RegistryService/ListArtifacts",
    "/cairn.artifacts.v1.ArtifactService/ListObjects",
)


class Seeder:
    """Creates the objects of one project, remembering their ids by field name."""

    def __init__(self, channel: grpc.aio.Channel, admin_key: str, project: str) -> None:
        self.project = project
        self.metadata: Metadata = (("authorization", f"Bearer {admin_key}"),)
        self.auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        self.tracking = tracking_service_pb2_grpc.TrackingServiceStub(channel)
        self.registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        self.artifacts = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
        self.ids: dict[str, list[str]] = {}
        # Each list RPC's request for a page of one item, and the token it answered.
        self.first_pages: dict[str, Message] = {}
        self.tokens: dict[str, values.RealToken] = {}

    def remember(self, value: str, *fields: str) -> str:
        for name in fields:
            self.ids.setdefault(name, []).append(value)
        return value

    async def viewer_key(self, user: str) -> str:
        await self.auth.AddUserProjectRole(
            auth_service_pb2.AddUserProjectRoleRequest(
                project=self.project, user_id=user, role=auth_pb2.PROJECT_ROLE_VIEWER
            ),
            metadata=self.metadata,
        )
        created = await self.auth.CreateApiKey(
            auth_service_pb2.CreateApiKeyRequest(
                name="viewer", expiration=auth_pb2.API_KEY_EXPIRATION_30_DAYS, user_id=user
            ),
            metadata=self.metadata,
        )
        self.remember(user, "user_id")
        # Keys the fuzzer may revoke (never the one it calls with).
        for name in ("spare-1", "spare-2", "spare-3"):
            spare = await self.auth.CreateApiKey(
                auth_service_pb2.CreateApiKeyRequest(
                    name=name, expiration=auth_pb2.API_KEY_EXPIRATION_30_DAYS, user_id=user
                ),
                metadata=self.metadata,
            )
            self.remember(spare.info.prefix, "api_key")
        self.remember(spare.api_key, "api_key")
        return created.api_key

    async def tracking_data(self) -> None:
        t, md = tracking_service_pb2, self.metadata
        self.remember(f"cairn-artifacts://{self.project}/experiments/x", "artifact_location")
        for key, value in (("m1", "1"), ("team", "x"), ("p", "2")):
            self.remember(key, "key", "metric_key")
            self.remember(value, "value")
        experiment_ids = []
        for name in ("exp-a", "exp-b"):
            reply = await self.tracking.CreateExperiment(
                t.CreateExperimentRequest(
                    project=self.project, name=name, tags=[tracking_pb2.Tag(key="team", value="x")]
                ),
                metadata=md,
            )
            experiment_ids.append(reply.experiment.experiment_id)
            self.remember(reply.experiment.experiment_id, "experiment_id", "experiment_ids")
            self.remember(name, "name", "new_name")
        for i in range(3):
            run = await self.tracking.CreateRun(
                t.CreateRunRequest(
                    project=self.project, experiment_id=experiment_ids[0], run_name=f"run-{i}"
                ),
                metadata=md,
            )
            run_id = run.run.info.run_id
            self.remember(run_id, "run_id", "run_ids", "parent_run_id", "source_run_id")
            await self.tracking.LogBatch(
                t.LogBatchRequest(
                    project=self.project,
                    run_id=run_id,
                    metrics=tracking_pb2.MetricColumns(
                        keys=["m1"],
                        key_indexes=[0, 0],
                        values=[0.5, 1.5],
                        steps=[0, 1],
                        timestamps_ms=[1, 2],
                    ),
                    params=[tracking_pb2.Param(key="p", value=str(i))],
                    tags=[tracking_pb2.Tag(key="team", value="x")],
                ),
                metadata=md,
            )
        self.first_pages[LIST_RPCS[0]] = t.SearchExperimentsRequest(
            project=self.project, page_size=1
        )
        self.first_pages[LIST_RPCS[1]] = t.SearchRunsRequest(
            project=self.project, experiment_ids=experiment_ids[:1], page_size=1
        )

    async def registry_data(self) -> None:
        r, md = registry_service_pb2, self.metadata
        model_ids = []
        for i in range(2):
            reply = await self.registry.CreateRegisteredModel(
                r.CreateRegisteredModelRequest(
                    registered_model=registry_pb2.RegisteredModel(
                        project=self.project,
                        name=f"model-{i}",
                        tags={"team": "x"},
                        external_id=f"{self.project}-model-ext-{i}",
                    )
                ),
                metadata=md,
            )
            model_ids.append(reply.registered_model.id)
            self.remember(reply.registered_model.id, "id", "registered_model_id")
            self.remember(f"model-{i}", "name")
            self.remember(f"{self.project}-model-ext-{i}", "external_id")
        version_ids = []
        for i in range(2):
            reply = await self.registry.CreateModelVersion(
                r.CreateModelVersionRequest(
                    model_version=registry_pb2.ModelVersion(
                        project=self.project,
                        registered_model_id=model_ids[0],
                        name=f"v{i}.0",
                        external_id=f"{self.project}-version-ext-{i}",
                    )
                ),
                metadata=md,
            )
            version_ids.append(reply.model_version.id)
            self.remember(reply.model_version.id, "id", "model_version_id")
            self.remember(f"v{i}.0", "name")
            self.remember(f"{self.project}-version-ext-{i}", "external_id")
        await self.registry.SetRegisteredModelAlias(
            r.SetRegisteredModelAliasRequest(
                project=self.project, registered_model_id=model_ids[0], alias="champion", version=1
            ),
            metadata=md,
        )
        self.remember("champion", "alias")
        for i in range(2):
            reply = await self.registry.CreateArtifact(
                r.CreateArtifactRequest(
                    artifact=registry_pb2.Artifact(
                        project=self.project,
                        model_version_id=version_ids[0],
                        name=f"art-{i}",
                        uri=f"s3://bucket/art-{i}",
                        model=registry_pb2.ModelArtifactDetails(model_format_name="onnx"),
                    )
                ),
                metadata=md,
            )
            self.remember(reply.artifact.id, "id")
            self.remember(f"art-{i}", "name")
            self.remember(f"s3://bucket/art-{i}", "uri", "source_uri")
        self.remember("onnx", "model_format_name")
        self.first_pages[LIST_RPCS[2]] = r.ListRegisteredModelsRequest(
            project=self.project, page_size=1
        )
        self.first_pages[LIST_RPCS[3]] = r.ListModelVersionsRequest(
            project=self.project, page_size=1
        )
        self.first_pages[LIST_RPCS[4]] = r.ListArtifactsRequest(project=self.project, page_size=1)

    async def artifact_data(self) -> None:
        a, md = artifacts_service_pb2, self.metadata
        for path in OBJECT_PATHS:
            content = path.encode() * 10
            await self.artifacts.Upload(
                iter(
                    [
                        a.UploadRequest(header=a.UploadHeader(project=self.project, path=path)),
                        a.UploadRequest(chunk=content),
                        a.UploadRequest(
                            finish=a.UploadFinish(sha256=hashlib.sha256(content).hexdigest())
                        ),
                    ]
                ),
                metadata=md,
            )
            self.remember(path, "path", "prefix")
            self.remember(hashlib.sha256(content).hexdigest(), "expected_sha256", "sha256")
        self.remember("data/", "prefix")
        self.remember("text/plain", "content_type")
        presigned = await self.artifacts.CreatePresignedUrl(
            a.CreatePresignedUrlRequest(
                project=self.project,
                path="data/put.txt",
                method=artifacts_pb2.PRESIGN_METHOD_PUT,
                content_type="text/plain",
            ),
            metadata=md,
        )
        self.remember(presigned.upload_id, "upload_id")
        self.remember("data/put.txt", "path")
        self.first_pages[LIST_RPCS[5]] = a.ListObjectsRequest(
            project=self.project, recursive=True, page_size=1
        )

    async def page_tokens(self, channel: grpc.aio.Channel, seal_keys: Mapping[str, bytes]) -> None:
        """Each list's real token, with the key its service (by full name) seals with."""
        for path, request in self.first_pages.items():
            reply_class = _reply_class(path)
            reply = await channel.unary_unary(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=reply_class.FromString,
            )(request, metadata=self.metadata)
            assert reply.next_page_token, f"{path} gave no token for its first page of one"
            service = path.strip("/").split("/")[0]
            self.tokens[path] = values.RealToken(reply.next_page_token, seal_keys[service])

    async def filter_fields(self, channel: grpc.aio.Channel) -> dict[str, tuple[str, ...]]:
        """For each list with a filter, the identifiers its filter accepts: each
        candidate is tried, compared with a string and with a number."""
        tried = [
            (path, ident, value)
            for path, request in self.first_pages.items()
            if "filter" in request.DESCRIPTOR.fields_by_name
            for ident in dict.fromkeys(values.VALID_IDENTIFIERS + values.ATTRIBUTES)
            for value in ("'x'", "0")
        ]
        answers = await asyncio.gather(*(self._try_filter(channel, *t) for t in tried))
        accepted: dict[str, list[str]] = {}
        for (path, ident, _), ok in zip(tried, answers, strict=True):
            name = self.first_pages[path].DESCRIPTOR.full_name
            if ok and ident not in accepted.setdefault(name, []):
                accepted[name].append(ident)
        return {name: tuple(idents) for name, idents in accepted.items()}

    async def _try_filter(
        self, channel: grpc.aio.Channel, path: str, ident: str, value: str
    ) -> bool:
        request = type(self.first_pages[path])()
        request.CopyFrom(self.first_pages[path])
        request.filter = f"{ident} = {value}"
        try:
            await channel.unary_unary(path, request_serializer=type(request).SerializeToString)(
                request, metadata=self.metadata
            )
        except grpc.aio.AioRpcError:
            return False
        return True


def _reply_class(path: str) -> type[Message]:
    service, method = path.strip("/").split("/")
    found = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    return message_factory.GetMessageClass(found.output_type)


async def seed(
    channel: grpc.aio.Channel,
    admin_key: str,
    project: str,
    viewer: str,
    seal_keys: Mapping[str, bytes],
) -> tuple[Seeder, Keys]:
    """Creates `project` with experiments, runs, models, versions, artifacts and
    objects, and a viewer's key in it."""
    seeder = Seeder(channel, admin_key, project)
    await seeder.auth.CreateProject(
        auth_service_pb2.CreateProjectRequest(name=project), metadata=seeder.metadata
    )
    keys = Keys(admin=admin_key, viewer=await seeder.viewer_key(viewer))
    await seeder.tracking_data()
    await seeder.registry_data()
    await seeder.artifact_data()
    await seeder.page_tokens(channel, seal_keys)
    return seeder, keys


def known(seeder: Seeder, filter_fields: Mapping[str, tuple[str, ...]]) -> Known:
    by_field = {k: tuple(v) for k, v in seeder.ids.items()}
    first_pages = {path: m.SerializeToString() for path, m in seeder.first_pages.items()}
    return Known(seeder.project, by_field, dict(seeder.tokens), first_pages, filter_fields)
