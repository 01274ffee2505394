# One segflow replica. Configuration comes from SEGFLOW_* variables (see config/segflow.toml);
# secrets (SEGFLOW_UPSTREAM_API_KEY, SEGFLOW_WEBHOOK_KEYS, SEGFLOW_API_KEYS) only from the environment.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 segflow
COPY --from=build /install /usr/local
COPY config /etc/segflow
ENV SEGFLOW_CONFIG=/etc/segflow/segflow.toml \
    SEGFLOW_HOST=0.0.0.0 \
    SEGFLOW_LOG_FORMAT=json \
    SEGFLOW_ARTIFACT_DIR=/var/lib/segflow/artifacts \
    SEGFLOW_DATABASE_URL=sqlite:////var/lib/segflow/segflow.db
RUN mkdir -p /var/lib/segflow && chown segflow /var/lib/segflow
USER segflow
VOLUME /var/lib/segflow
EXPOSE 8600
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8600/healthz')"
ENTRYPOINT ["segflow"]
CMD ["serve"]
