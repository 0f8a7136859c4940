# One image for tally-ingest, tally-flusher, tally-exporter and the migrate job.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tally ./tally
COPY stack ./stack
COPY ingest ./ingest
COPY exporter ./exporter
COPY timescale ./timescale
# Editable, so tally.settings.PROJECT_ROOT is /app and timescale/*.sql are found.
RUN pip install --no-cache-dir -e . \
    && useradd --system --uid 10001 tally
USER tally
ENTRYPOINT []
CMD ["tally", "--help"]
