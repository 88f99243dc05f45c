# One image for a sketchwatch worker set. The C hashing extension is compiled in a build stage,
# so the runtime image carries no compiler.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY sketches ./sketches
COPY operators ./operators
COPY connectors ./connectors
COPY dataflows ./dataflows
COPY recovery ./recovery
COPY bench ./bench
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels sketchwatch \
 && rm -rf /wheels \
 && useradd --create-home sketchwatch \
 && mkdir /data /recovery && chown sketchwatch /data /recovery
USER sketchwatch
WORKDIR /home/sketchwatch
# The flow and its settings come from the environment (see the README): SKETCHWATCH_* for the flow,
# and Bytewax's own BYTEWAX_WORKERS_PER_PROCESS, BYTEWAX_PROCESS_ID, BYTEWAX_ADDRESSES,
# BYTEWAX_RECOVERY_DIRECTORY, BYTEWAX_SNAPSHOT_INTERVAL, BYTEWAX_RECOVERY_BACKUP_INTERVAL for the
# worker set. Without them: the fraud flow on its built-in generator, alerts into ./sketchwatch.db.
ENV SKETCHWATCH_FLOW=fraud
EXPOSE 2101
CMD ["sh", "-c", "exec python -m bytewax.run dataflows.${SKETCHWATCH_FLOW}"]
