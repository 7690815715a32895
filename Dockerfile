# One image for every Nakhon service: `nakhon gateway`, `nakhon processor`,
# `nakhon api`, `nakhon maintain`, `nakhon migrate`, `nakhon simulate`.
# docker-compose.yml picks the command; configuration is NAKHON_* variables.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
# The runtime dependencies exactly as pinned and hash-checked in
# requirements/runtime.lock (`make lock`), in a layer of their own; then Nakhon.
COPY requirements/runtime.lock ./requirements/
RUN pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY nakhon ./nakhon
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
# /wheels holds only the locked versions: nakhon's dependencies resolve to them.
RUN pip install --no-cache-dir --no-index --find-links=/wheels nakhon \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home nakhon
USER nakhon
# gateway metrics, processor metrics, API
EXPOSE 9101 9102 8080
ENTRYPOINT ["nakhon"]
CMD ["--help"]
