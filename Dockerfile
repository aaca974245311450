# One image for the three services; the command picks one: `serve tracking`, `serve registry`,
# `serve artifacts`, or `migrate`. Build with `make image`.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY clients ./clients
COPY services ./services
# Wheels of the project and its pinned dependencies; nothing of this stage ships.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt ".[server]"

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 cairn \
    && useradd --system --uid 10001 --gid cairn --no-create-home --shell /usr/sbin/nologin cairn
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "cairn[server]==0.1.0" \
    && rm -rf /wheels
USER 10001:10001
# Reachable from other hosts, so API keys are required (bootstrap: cairn keys create).
ENV CAIRN_LISTEN_ADDRESS=0.0.0.0:50051 \
    CAIRN_AUTH=api_key \
    CAIRN_METRICS_ADDRESS=0.0.0.0:9090 \
    CAIRN_LOG_FORMAT=json \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 50051 9090
ENTRYPOINT ["cairn"]
CMD ["serve"]
