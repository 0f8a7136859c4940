# One image for tally-ingest, tally-flusher, tally-exporter and the migrate job.
# The first stage builds Tally's wheel; the image installs that wheel alone, so it
# runs Tally as any pip install does: Lua scripts and SQL migrations are package
# data, and no source checkout is in the image (tests/test_wheel.py checks the wheel).
FROM python:3.11.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tally ./tally
COPY stack ./stack
COPY ingest ./ingest
COPY exporter ./exporter
COPY timescale ./timescale
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/tally-*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --create-home tally
USER tally
WORKDIR /home/tally
ENTRYPOINT []
CMD ["tally", "--help"]
